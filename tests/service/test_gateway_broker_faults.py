"""The broker killed -9 and restarted under a running gateway and agents."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

import pytest
import requests

from tests.service.conftest import wait_ready
from tests.support.broker import Broker
from tests.support.gateway import GatewayProc, wait_until
from tests.support.procs import Service

pytestmark = pytest.mark.service


class ReadPoller:
    """GET /vms every 50 ms in the background; records every answer that is not a 200."""

    def __init__(self, gateway: GatewayProc) -> None:
        self.gateway, self.reads, self.bad = gateway, 0, []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                resp = self.gateway.get("/vms")
                self.reads += 1
                if resp.status_code != 200:
                    self.bad.append(resp.status_code)
            except requests.RequestException as exc:
                self.bad.append(repr(exc))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def test_broker_kill_and_restart(
    demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc], broker: Broker
) -> None:
    # A long accept timeout: a command that waited for the broker would wait that long, so
    # "at once" can be told from it with room to spare on a busy machine.
    gateway = start_gateway(KVMSUP_ACCEPT_TIMEOUT="20")
    wait_ready(gateway, timeout=30)
    poller = ReadPoller(gateway)
    try:
        _kill_and_restart(gateway, broker)
    finally:
        poller.close()
    assert poller.bad == [] and poller.reads > 10  # reads were served throughout


def _kill_and_restart(gateway: GatewayProc, broker: Broker) -> None:
    before = gateway.get("/vms").json()
    metrics = gateway.get("/metrics").text
    assert 'kvmsup_gateway_mqtt_connected{gateway="gw-test"} 1' in metrics

    broker.kill()
    wait_until(lambda: gateway.get("/health").json()["broker_connected"] is False, timeout=20)

    # Down: commands answer 503 at once; reads keep being served from the cache.
    t0 = time.monotonic()
    resp = gateway.post("/vm/web-01/stop")
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "broker_unreachable"
    assert time.monotonic() - t0 < 10.0  # not held for the 20 s accept timeout
    assert gateway.get("/vms").json() == before
    assert gateway.get("/vm/web-01/metrics").status_code == 200
    assert gateway.get("/health").json()["status"] == "degraded"
    assert 'kvmsup_gateway_mqtt_connected{gateway="gw-test"} 0' in gateway.get("/metrics").text
    # The audit is written a few ms after the answer (one writer thread): poll for it.
    refused = wait_until(lambda: gateway.get("/audit?result=refused").json()["audit"])
    assert refused[0]["error"]["code"] == "broker_unreachable"

    broker.start()  # same port, empty: no retained message survived (persistence false)
    restarted = time.time()

    def fresh() -> bool:
        health = gateway.get("/health").json()
        hosts = gateway.get("/hosts").json()["hosts"]
        # Agents republished `online` (and every VM) after reconnecting: newer than the restart.
        return (
            health["broker_connected"]
            and len(hosts) == 2
            and all(h["online"] and _epoch(h["ts"]) > restarted for h in hosts)
        )

    wait_until(fresh, timeout=30, every=0.2)
    wait_until(
        lambda: _epoch(gateway.get("/vm/web-01/metrics").json()["ts"]) > restarted, timeout=10
    )

    job = gateway.post("/vm/web-01/stop", json={"force": True})
    assert job.status_code == 200, job.text
    assert (job.json()["status"], job.json()["state"]) == ("succeeded", "stopped")
    wait_until(lambda: gateway.get("/vm/web-01").json()["state"] == "stopped")
    assert gateway.get("/vms").json()["count"] == before["count"]


def _epoch(iso: str | None) -> float:
    if iso is None:  # no metrics batch seen yet
        return 0.0
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
