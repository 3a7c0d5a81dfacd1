"""Fixtures of every tier (a Mosquitto per test, an MQTT recorder, agents); pytest-xdist groups."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker
from tests.support.mqtt import Recorder
from tests.support.procs import Service, agent_service, stop_all
from tests.support.testdriver import TestDriverDaemon

E2E_DIR = Path(__file__).resolve().parent / "e2e"


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
    """A test using a module-scoped fixture (a shared broker or stack) runs on the same
    pytest-xdist worker as the rest of its module (group = the module), so the module starts
    those processes once; other tests are spread one by one (`make test`: --dist loadgroup)."""
    for item in items:
        if E2E_DIR in Path(item.path).resolve().parents:
            continue  # the whole tier is one group of its own (tests/e2e/conftest.py)
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d[-1].scope == "module" for d in defs if d):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test shows the logs of the agents it started and of the stack its module
    shares: a failure seen only on a busy CI runner is otherwise gone with its temporary
    directory."""
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


STARTED_AGENTS = pytest.StashKey[list[Service]]()
# The e2e tier's report (accelerator, timings) as pytest-xdist workers hand it over.
E2E_REPORT: dict[str, object] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    E2E_REPORT.update(getattr(node, "workeroutput", {}).get("e2e_report", {}))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if E2E_REPORT:
        line = ", ".join(f"{k}={v}" for k, v in E2E_REPORT.items())
        terminalreporter.write_line(f"e2e: {line}")


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
