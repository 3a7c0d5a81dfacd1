"""Fixtures shared by every tier: a real Mosquitto per test, an MQTT recorder, agent processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.mqtt import Recorder
from tests.support.procs import Service, agent_service
from tests.support.testdriver import TestDriverDaemon


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test shows the logs of the agents it started: a failure seen only on a busy CI
    runner is otherwise gone with its temporary directory."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for svc in item.stash.get(STARTED_AGENTS, []):
            report.sections.append((f"{svc.name} log ({svc.log})", svc.tail()))


STARTED_AGENTS = pytest.StashKey[list[Service]]()


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
    for svc in started:
        svc.stop()
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
