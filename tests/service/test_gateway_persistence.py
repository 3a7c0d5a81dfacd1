"""History, agent events and the command audit survive a gateway restart (KVMSUP_DB)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.service.conftest import wait_ready
from tests.support.gateway import GatewayProc, wait_until
from tests.support.mqtt import Recorder
from tests.support.procs import Service
from tests.support.testdriver import TestDriverDaemon

pytestmark = pytest.mark.service


def kill9_tree(service: Service) -> None:
    """kill -9 of the gateway: its gunicorn worker (which holds the MQTT connection and the
    jobs) first, then the master, so no worker lives on to finish anything."""
    path = Path(f"/proc/{service.pid}/task/{service.pid}/children")
    workers = [int(p) for p in path.read_text().split()] if path.exists() else []
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    service.kill9()


def test_history_events_and_audit_survive_a_restart(
    gateway: GatewayProc, start_gateway: Callable[..., GatewayProc]
) -> None:
    job = gateway.post("/vm/web-01/stop", json={"force": True}).json()
    assert job["status"] == "succeeded", job
    assert gateway.post("/vm/ghost/start").status_code == 404  # refused: audited too
    before = wait_until(
        lambda: len(p := gateway.get("/vm/web-01/history?minutes=5").json()["points"]) >= 3 and p
    )
    assert all(
        set(pt) >= {"ts", "cpu_percent", "memory_used_mb", "disk_read_bps", "net_rx_bps"}
        for pt in before
    )
    wait_until(
        lambda: any(
            e.get("id") == job["id"] for e in gateway.get("/events?kind=command").json()["events"]
        )
    )
    gateway.stop()

    fresh = start_gateway(tokens=gateway.tokens)
    wait_ready(fresh)
    after = fresh.get("/vm/web-01/history?minutes=5").json()["points"]
    assert {p["ts"] for p in before} <= {p["ts"] for p in after}

    audit = fresh.get("/audit?by=bob").json()["audit"]
    done = next(a for a in audit if a["id"] == job["id"])
    assert (done["by"], done["action"], done["result"], done["name"], done["host"]) == (
        "bob",
        "destroy",
        "succeeded",
        "web-01",
        "demo-a",
    )
    assert done["ts"] and done["finished_at"]
    refused = next(a for a in audit if a["name"] == "ghost")
    assert (refused["action"], refused["result"], refused["error"]["code"]) == (
        "start",
        "refused",
        "not_found",
    )

    events = fresh.get("/events?kind=command&vm=web-01").json()["events"]
    assert any(e["id"] == job["id"] and e["by"] == "bob" for e in events)
    assert fresh.get("/audit", token=None).status_code == 401


def test_a_job_survives_a_gateway_kill_and_ends_with_the_agents_outcome(
    testdriver: TestDriverDaemon,
    start_agent: Callable[..., Service],
    start_gateway: Callable[..., GatewayProc],
    recorder: Recorder,
) -> None:
    """kill -9 of the gateway while a 202 job runs; the agent finishes while no gateway is
    up; the restarted gateway (same id, same KVMSUP_DB) still answers GET /jobs/<id>, and the
    job ends with what the agent did: its reply waited in the broker's session."""
    start_agent("td", f"test+unix:///default?socket={testdriver.socket}")
    gw = start_gateway()
    wait_until(lambda: gw.get("/vm/test").json().get("state") == "running", timeout=20)
    recorder.subscribe("kvmsup/v1/td/events")
    assert testdriver.proc is not None
    libvirtd = testdriver.proc.pid
    # A frozen libvirtd holds the shutdown: the agent accepts it (from what it knows), then
    # waits on libvirt, as it would on a guest slow to stop.
    os.kill(libvirtd, signal.SIGSTOP)
    try:
        resp = gw.post("/vm/test/stop?wait=0")
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert job["status"] == "accepted"
        kill9_tree(gw.service)
    finally:
        os.kill(libvirtd, signal.SIGCONT)
    outcome = recorder.wait_for(
        lambda m: m.json().get("id") == job["id"] and m.json().get("status") != "accepted",
        timeout=30,
    )[0].json()
    assert outcome["status"] == "succeeded", outcome

    fresh = start_gateway(tokens=gw.tokens)
    done = wait_until(
        lambda: (j := fresh.get(f"/jobs/{job['id']}").json()).get("finished") and j, timeout=20
    )
    assert (done["status"], done["state"], done["action"]) == ("succeeded", "stopped", "shutdown")
    assert done["revised"] is None  # the gateway never guessed: it waited for the agent
    audit = wait_until(
        lambda: [
            a
            for a in fresh.get("/audit?by=bob").json()["audit"]
            if a["id"] == job["id"] and a["result"] == "succeeded"
        ]
    )
    assert audit[0]["action"] == "shutdown"
    assert any(j["id"] == job["id"] for j in fresh.get("/jobs").json()["jobs"])
