"""Service-tier fixtures: the demo agents and gateways, per test or shared by a module."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker
from tests.support.gateway import GatewayProc, wait_until
from tests.support.gateway_app import make_app  # noqa: F401  (an app in-process, started)
from tests.support.procs import Service, agent_service, demo_node_uri, stop_all

DEMO_VMS = 7  # 4 on demo-a, 3 on demo-b
DEMO_HOSTS = ("demo-a", "demo-b")


@pytest.fixture
def demo_agents(start_agent: Callable[..., Service]) -> dict[str, Service]:
    """Real agents `demo-a` and `demo-b` on the demo node files, sharing the test's broker."""
    return {h: start_agent(h, demo_node_uri(h)) for h in DEMO_HOSTS}


@pytest.fixture
def start_gateway(tmp_path: Path, broker: Broker) -> Iterator[Callable[..., GatewayProc]]:
    """Start `python -m gateway` processes; all are stopped and their logs checked at teardown."""
    started: list[GatewayProc] = []

    def start(**kw: Any) -> GatewayProc:
        gw = GatewayProc(tmp_path, broker.url, **kw)
        started.append(gw.start())
        return gw

    yield start
    for gw in started:
        gw.stop()
    for gw in started:
        out = gw.service.output()
        assert "Traceback" not in out, out[-3000:]


def wait_ready(gw: GatewayProc, vms: int = DEMO_VMS, timeout: float = 10.0) -> dict[str, Any]:
    """Until the gateway serves every demo VM with both hosts online."""

    def ready() -> dict[str, Any] | None:
        body: dict[str, Any] = gw.get("/vms").json()
        online = all(v["host_online"] for v in body.get("vms", []))
        return body if body.get("count") == vms and online else None

    result: dict[str, Any] = wait_until(ready, timeout)
    return result


@pytest.fixture
def gateway(
    demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc]
) -> GatewayProc:
    gw = start_gateway()
    wait_ready(gw)
    return gw


def assert_clean_logs(services: list[Service]) -> None:
    """A thread that died or a callback that swallowed an exception fails the test (or, for a
    shared process, the module) that owned the process."""
    for svc in services:
        out = svc.output()
        assert "Traceback" not in out, f"{svc.name} logged an exception:\n{out[-4000:]}"


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One Mosquitto for the whole module: its tests keep to topics (prefixes, hosts, VMs) of
    their own, and none of them kills or restarts it."""
    b = Broker(tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.stop()


@dataclass
class DemoStack:
    """The two demo agents and a gateway on one broker, shared by the tests of a module."""

    broker: Broker
    agents: dict[str, Service]
    gateway: GatewayProc

    def services(self) -> list[Service]:
        """Whose logs a failed test shows (tests/conftest.py)."""
        return [*self.agents.values(), self.gateway.service]


@contextlib.contextmanager
def demo_stack(
    workdir: Path, gateway_id: str = "gw-shared", **gateway_env: str
) -> Iterator[DemoStack]:
    """Start a broker, the demo agents and a gateway, wait until it serves every demo VM; at
    the end stop them and fail on any traceback in their logs (the fixtures' own check)."""
    broker = Broker(workdir)
    broker.start()
    agents = {h: agent_service(workdir, h, broker.url, demo_node_uri(h)) for h in DEMO_HOSTS}
    # Not `gw-test` by default: a test may start a gateway of its own on this broker.
    gw = GatewayProc(workdir, broker.url, gateway_id=gateway_id, **gateway_env)
    try:
        for agent in agents.values():
            agent.start()
        gw.start()
        wait_ready(gw)
        yield DemoStack(broker, agents, gw)
    finally:
        gw.stop()  # closes our keep-alive connection first
        stop_all(list(agents.values()))
        broker.stop()
    assert_clean_logs([*agents.values(), gw.service])


@pytest.fixture(scope="module")
def shared_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoStack]:
    """One demo stack for a module whose tests only read it or attack the gateway: the
    gateway's settings come from the module's SHARED_GATEWAY_ENV (and its id from
    SHARED_GATEWAY_ID). A test that kills, restarts or reconfigures a process starts its own
    (`start_gateway`, `start_agent`)."""
    env: dict[str, str] = getattr(request.module, "SHARED_GATEWAY_ENV", {})
    gateway_id: str = getattr(request.module, "SHARED_GATEWAY_ID", "gw-shared")
    with demo_stack(tmp_path_factory.mktemp("stack"), gateway_id, **env) as stack:
        yield stack
