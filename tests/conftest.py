"""Fixtures shared by every tier: a real Mosquitto per test, an MQTT recorder, agent processes;
the unit tier's app fixture and its no-I/O guard, applied by marker wherever a test lives;
pytest-xdist groups."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker
from tests.support.gateway_app import make_app
from tests.support.mqtt import Recorder
from tests.support.no_io import UnitIO, guarded
from tests.support.procs import Service, agent_service, stop_all
from tests.support.testdriver import TestDriverDaemon

__all__ = ["make_app"]  # an app in-process: `make_app(started=False)` is built only (unit tier)

TIERS = ("unit", "service", "e2e")
# Tiers whose tests all go to one pytest-xdist worker, one at a time: their session fixtures
# are machine-wide (a libvirtd and its paths, a Docker engine) or built once (the wheel).
TIER_GROUPS = {Path(__file__).resolve().parent / d: d for d in ("e2e", "container", "package")}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A private Mosquitto (dev config) on its own port; killed at the end of the test."""
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def recorder(broker: Broker) -> Iterator[Recorder]:
    rec = Recorder(broker.port)
    yield rec
    rec.close()


@pytest.fixture
def prefix() -> str:
    """A topic prefix of the test's own (aiomqtt's habit), for tests sharing a broker."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets one tier: its own tier marker when it has one, else its module's (or
    class's) `pytestmark`. So a subject's unit tests can share a file with its service tests,
    each marked, and `-m unit` / `-m service` select each test once.

    A test using a module-scoped fixture (a shared broker or stack) runs on the same
    pytest-xdist worker as the rest of its module (group = the module), so the module starts
    those processes once; other tests are spread one by one (`make test`: --dist loadgroup)."""
    parents = []
    for item in items:
        tiers = [(node, m.name) for node, m in item.iter_markers_with_node() if m.name in TIERS]
        if tiers and tiers[0][0] is not item:  # the closest tier marker is a parent's
            item.add_marker(tiers[0][1])
        parents += [node for node, _ in tiers if node is not item]
    for node in parents:
        node.own_markers[:] = [m for m in node.own_markers if m.name not in TIERS]
    for item in items:
        tier = next(
            (g for d, g in TIER_GROUPS.items() if d in Path(item.path).resolve().parents), None
        )
        if tier is not None:
            item.add_marker(pytest.mark.xdist_group(tier))
            continue
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d[-1].scope == "module" for d in defs if d):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test shows the logs of the agents it started and of the stack its module
    shares: a failure seen only on a busy CI runner is otherwise gone with its temporary
    directory. A test that failed before its teardown is noted, so the no-I/O guard does not
    report its I/O a second time."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        shown = list(item.stash.get(STARTED_AGENTS, []))
        for value in getattr(item, "funcargs", {}).values():
            services = getattr(value, "services", None)  # a stack shared by the module
            if callable(services):
                shown += [svc for svc in services() if svc not in shown]
        for svc in shown:
            report.sections.append((f"{svc.name} log ({svc.log})", svc.tail()))
        if report.when in ("setup", "call"):
            item.stash[FAILED_BEFORE_TEARDOWN] = True


STARTED_AGENTS = pytest.StashKey[list[Service]]()
FAILED_BEFORE_TEARDOWN = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def no_io(request: pytest.FixtureRequest) -> Iterator[UnitIO | None]:
    """Fail a test marked `unit` that opens a socket, starts a thread, spawns a process or
    opens an SQLite file (tests/support/no_io.py); other tiers are not guarded."""
    if request.node.get_closest_marker("unit") is None:
        yield None
        return
    with guarded(request.node.nodeid) as io:
        yield io
    if io.seen and not request.node.stash.get(FAILED_BEFORE_TEARDOWN, False):
        # The product caught the first failure (a thread's or a callback's handler did).
        pytest.fail("\n".join(dict.fromkeys(io.seen)), pytrace=False)


# The tiers' report lines (e2e: accelerator, timings; container: build time, image sizes) as
# pytest-xdist workers hand them over: a worker has no terminal of its own.
WORKER_REPORTS = {"e2e_report": ("e2e", "="), "container_report": ("container tier", " ")}
REPORTS: dict[str, dict[str, object]] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    output = getattr(node, "workeroutput", {})
    for key in WORKER_REPORTS:
        REPORTS.setdefault(key, {}).update(output.get(key, {}))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for key, (title, sep) in WORKER_REPORTS.items():
        if REPORTS.get(key):
            line = ", ".join(f"{k}{sep}{v}" for k, v in REPORTS[key].items())
            terminalreporter.write_line(f"{title}: {line}")


@pytest.fixture
def start_agent(
    request: pytest.FixtureRequest, tmp_path: Path, broker: Broker
) -> Iterator[Callable[..., Service]]:
    """Start `python -m agent` processes; every one is stopped and its log checked at teardown."""
    started: list[Service] = []
    request.node.stash[STARTED_AGENTS] = started

    def start(host_id: str, libvirt_uri: str, **extra: str) -> Service:
        svc = agent_service(tmp_path, host_id, broker.url, libvirt_uri, **extra)
        started.append(svc.start())
        return svc

    yield start
    stop_all(started)
    for svc in started:
        # A thread that died or a callback that swallowed an exception fails the test.
        out = svc.output()
        assert "Traceback" not in out, f"{svc.name} logged an exception:\n{out[-4000:]}"


@pytest.fixture
def testdriver(tmp_path: Path) -> Iterator[TestDriverDaemon]:
    """libvirt's test driver behind a private libvirtd: the test and its agents share VMs."""
    daemon = TestDriverDaemon(tmp_path)
    daemon.start()
    yield daemon
    daemon.stop()
