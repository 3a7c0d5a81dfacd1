"""Socket.IO against the gateway process, with a real python-socketio client (websocket)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import socketio

from tests.service.conftest import DEMO_VMS, wait_ready
from tests.support.gateway import (
    GatewayProc,
    SioClient,
    check_seed_metrics,
    check_seed_vm,
    wait_until,
)
from tests.support.procs import Service

pytestmark = pytest.mark.service


def test_seed_events_answer_with_the_rest_shapes(gateway: GatewayProc) -> None:
    sio = gateway.sio()
    try:
        sio.client.emit("request_vms_list")
        listed = sio.wait_for("vms_list")
        assert listed == gateway.get("/vms").json()
        assert listed["count"] == DEMO_VMS
        for vm in listed["vms"]:
            check_seed_vm(vm)

        sio.client.emit("request_metrics", {"name": "web-01"})
        metrics = sio.wait_for("vm_metrics", lambda d: d["name"] == "web-01")
        assert list(metrics) == list(gateway.get("/vm/web-01/metrics").json())
        assert metrics["host"] == "demo-a"
        check_seed_metrics(metrics)

        sio.client.emit("request_all_metrics")
        every = sio.wait_for("all_metrics")
        assert every["count"] == DEMO_VMS
        assert {m["name"] for m in every["metrics"]} >= {"web-01", "backup", "media 🎬 box"}
        for item in every["metrics"]:
            check_seed_metrics(item)

        sio.client.emit("request_metrics", {"name": "shared-vm"})
        err = sio.wait_for("error")
        assert (err["status"], err["error"]["code"]) == (409, "ambiguous_name")
        sio.client.emit("request_metrics", {"name": "shared-vm", "host": "demo-b"})
        sio.wait_for("vm_metrics", lambda d: d["uuid"].startswith("b0000000"))
    finally:
        sio.close()


def test_bad_or_missing_token_is_refused_at_connect(gateway: GatewayProc) -> None:
    for token in (None, "wrong-token-123"):
        with pytest.raises(socketio.exceptions.ConnectionError):
            gateway.sio(token=token)
    by_query = gateway.sio(token="viewer", query_token=True)
    by_query.close()


def test_roles_on_socketio_commands(gateway: GatewayProc) -> None:
    viewer = gateway.sio("viewer")
    operator = gateway.sio("operator")
    try:
        denied = viewer.call("vm_action", {"name": "web-01", "action": "stop"})
        assert (denied["status"], denied["error"]["code"]) == (403, "forbidden")
        assert gateway.get("/vm/web-01").json()["state"] == "running"

        done = operator.call("vm_action", {"name": "web-01", "action": "stop", "force": True})
        assert done["status_code"] in (200, 202)
        assert (done["action"], done["by"]) == ("destroy", "bob")
        # Every client sees the job end, the viewer included.
        final = viewer.wait_for("job_update", lambda j: j["id"] == done["id"] and j["finished"])
        assert final["status"] == "succeeded"
    finally:
        viewer.close()
        operator.close()


def test_state_changes_are_pushed_as_vm_state(gateway: GatewayProc) -> None:
    sio = gateway.sio()
    try:
        assert gateway.post("/vm/db-01/suspend").status_code == 200
        pushed = sio.wait_for("vm_state", lambda d: d["name"] == "db-01")
        assert (pushed["host"], pushed["state"], pushed["is_active"]) == ("demo-a", "paused", True)
        check_seed_vm(pushed)
    finally:
        sio.close()


def test_host_status_is_pushed_when_an_agent_stops(
    gateway: GatewayProc, demo_agents: dict[str, Service]
) -> None:
    sio = gateway.sio()
    try:
        demo_agents["demo-b"].stop()
        gone = sio.wait_for("host_status", lambda d: d["host"] == "demo-b")
        assert gone["online"] is False
    finally:
        sio.close()


def test_metric_streams_follow_subscriptions(gateway: GatewayProc) -> None:
    sio = gateway.sio()
    try:
        ack = sio.call("subscribe_metrics", {"name": "web-01"})
        assert ack["host"] == "demo-a"
        wait_until(lambda: len(sio.of("vm_metrics")) >= 2, timeout=5)
        assert {m["name"] for m in sio.of("vm_metrics")} == {"web-01"}
        for streamed in sio.of("vm_metrics"):
            check_seed_metrics(streamed)

        sio.call("unsubscribe_metrics", {"name": "web-01"})
        assert_stream_stopped(sio, "web-01", barrier="db-01")
        sio.events.clear()
        sio.call("subscribe_metrics", {"name": "*"})
        wait_until(
            lambda: {m["name"] for m in sio.of("vm_metrics")} >= {"web-01", "backup"}, timeout=5
        )
        sio.call("unsubscribe_metrics", {"name": "*"})
        assert_stream_stopped(sio, "web-01", barrier="db-01")
    finally:
        sio.close()


def assert_stream_stopped(sio: SioClient, stopped: str, barrier: str) -> None:
    """After an unsubscribe: no `vm_metrics` of `stopped` from any later tick. The barrier is
    another VM of the same host (one metrics batch per host and tick, every VM of it with the
    batch's `ts`, emitted in order on one thread), subscribed to after the unsubscribe: once
    three of its ticks arrived, the batch after its first one was emitted in full after the
    unsubscribe, and on this connection before the third. Only the batch of the first barrier
    tick may still carry `stopped`: it may have been under way as the session left the room."""
    sio.events.clear()
    sio.call("subscribe_metrics", {"name": barrier})

    def ticks() -> list[dict[str, Any]]:
        return [m for m in sio.of("vm_metrics") if m["name"] == barrier]

    first = datetime.fromisoformat(wait_until(lambda: len(ticks()) >= 3 and ticks()[0])["ts"])
    late = [
        m
        for m in sio.of("vm_metrics")
        if m["name"] == stopped and datetime.fromisoformat(m["ts"]) > first
    ]
    assert late == [], f"{stopped} still streamed after its unsubscribe"
    sio.call("unsubscribe_metrics", {})  # every stream of the session, the barrier's too


def test_auth_none_serves_without_tokens(
    demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc]
) -> None:
    gw = start_gateway(KVMSUP_AUTH="none", KVMSUP_API_TOKENS="")
    wait_ready(gw)
    assert gw.get("/vms", token=None).json()["count"] == DEMO_VMS
    resp = gw.post("/vm/backup/start", token=None)
    assert resp.status_code == 200 and resp.json()["by"] == "anonymous"
    sio = gw.sio(token=None)
    try:
        assert sio.call("vm_action", {"name": "backup", "action": "stop"})["status"] in (
            "succeeded",
        )
    finally:
        sio.close()
    assert "KVMSUP_AUTH=none" in gw.service.output()


def test_dev_server_speaks_socketio_too(
    demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc]
) -> None:
    gw = start_gateway(dev=True, gateway_id="gw-dev")
    wait_ready(gw)
    sio = gw.sio()
    try:
        sio.client.emit("request_vms_list")
        assert sio.wait_for("vms_list")["count"] == DEMO_VMS
    finally:
        sio.close()
