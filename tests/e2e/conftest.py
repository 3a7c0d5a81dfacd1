"""The e2e tier: a private libvirtd with tiny real guests; every test in tests/e2e is marked e2e.

Boot-sector guests where a vCPU, a disk and a tap are enough; one small Linux guest
(test_linux_guest.py) for guest memory, ACPI power-off and NIC traffic. That one boots with
KVM when the kernel reaches its init within a few seconds, else with TCG (nested KVM on some
hosts hangs a directly booted kernel); the report line says which (`linux_accel`).

When libvirtd or QEMU cannot run here the tier is skipped with the reason; set
KVMSUP_E2E_REQUIRE=1 (CI) to turn that skip into a failure, so a missing install step shows.
Other knobs: KVMSUP_E2E_ACCEL=tcg forces TCG; KVMSUP_E2E_DIR=<dir> reuses (and then leaves
running) the daemon of `python -m tests.support.libvirtd up`; KVMSUP_E2E_LIBVIRT_URI=<uri> uses
someone else's libvirtd (fault tests skip); KVMSUP_E2E_KEEP=1 keeps the environment's directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.e2e.stack import Stack, running_stack
from tests.support.guests import Guest, Guests, Kind
from tests.support.libvirtd import Libvirtd, LibvirtUnavailable, from_environment

HERE = Path(__file__).resolve().parent
# What the session found out, printed at the end of the run (which accelerator, timings).
REPORT: dict[str, Any] = {}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every e2e test is marked `e2e` (tests/conftest.py puts the tier on one xdist worker)."""
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed e2e test shows the agent's and the gateway's logs: a flaky failure on a CI
    runner is otherwise gone with its temporary directory."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Stack):
            for svc in (value.agent, value.gateway.service):
                report.sections.append((f"{svc.name} log ({svc.log})", svc.tail()))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        line = ", ".join(f"{k}={v}" for k, v in REPORT.items())
        terminalreporter.write_line(f"e2e: {line}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker, hand the report to the controller, which prints it
    (tests/conftest.py): a worker has no terminal of its own."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and REPORT:
        workeroutput["e2e_report"] = dict(REPORT)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("KVMSUP_E2E_REQUIRE"):
        pytest.fail(f"e2e environment required but unavailable: {reason}", pytrace=False)
    pytest.skip(f"e2e: {reason}")


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[Libvirtd]:
    """The session's libvirtd (ours unless KVMSUP_E2E_LIBVIRT_URI); `.uri` for clients."""
    env = from_environment()
    try:
        env.up(owner=os.getpid())
    except LibvirtUnavailable as exc:
        if env.started:
            env.down()
        env.remove()
        _unavailable(str(exc))
    REPORT["accel"] = env.accel.upper()
    REPORT["libvirtd_up_s"] = round(env.started_in or 0.0, 2)
    REPORT["uri"] = env.uri
    yield env
    if env.started:
        env.down()
    if env.started or not env.owned:  # never the directory of a `make e2e-env` daemon
        env.remove()


@pytest.fixture
def libvirtd_faults(libvirtd: Libvirtd) -> Iterator[Libvirtd]:
    """The same daemon, for a test that kills or freezes it; healed (SIGCONT/restart) after."""
    if not libvirtd.owned:
        pytest.skip("fault tests need a libvirtd started by the tests (KVMSUP_E2E_LIBVIRT_URI)")
    yield libvirtd
    libvirtd.heal()


@pytest.fixture(scope="session")
def guests(libvirtd: Libvirtd) -> Iterator[Guests]:
    """Session guest factory; every guest it made is destroyed and undefined at the end."""
    factory = Guests(libvirtd.uri, libvirtd.root / "images", libvirtd.accel)
    yield factory
    factory.cleanup()


@pytest.fixture
def make_guest(guests: Guests) -> Iterator[Callable[..., Guest]]:
    """make_guest('idle'|'spin', name=None, start=True): a guest removed at the end of the test."""
    made: list[Guest] = []

    def make(kind: Kind, *, name: str | None = None, start: bool = True) -> Guest:
        guest = guests.create(kind, name=name, start=start)
        made.append(guest)
        return guest

    yield make
    for guest in made:
        guests.remove(guest)


@pytest.fixture
def stack(libvirtd: Libvirtd, tmp_path: Path) -> Iterator[Stack]:
    """A fresh broker, agent and gateway for one test, on the session's libvirtd."""
    with running_stack(tmp_path, libvirtd.uri) as s:
        yield s
