"""History, agent events and the command audit survive a gateway restart (KVMSUP_DB)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.service.conftest import wait_ready
from tests.support.gateway import GatewayProc, wait_until

pytestmark = pytest.mark.service


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
