"""Service-tier fixtures for the gateway: the two demo agents and gateway processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker
from tests.support.gateway import GatewayProc, wait_until
from tests.support.gateway_app import make_app  # noqa: F401  (an app in-process, started)
from tests.support.procs import Service, demo_node_uri

DEMO_VMS = 7  # 4 on demo-a, 3 on demo-b


@pytest.fixture
def demo_agents(start_agent: Callable[..., Service]) -> dict[str, Service]:
    """Real agents `demo-a` and `demo-b` on the demo node files, sharing the test's broker."""
    return {h: start_agent(h, demo_node_uri(h)) for h in ("demo-a", "demo-b")}


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
