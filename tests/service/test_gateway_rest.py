"""The gateway's REST API against real agents on the demo node files and a real Mosquitto."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.service.conftest import DEMO_VMS, wait_ready
from tests.support.gateway import GatewayProc, check_seed_metrics, check_seed_vm, wait_until
from tests.support.procs import Service

pytestmark = pytest.mark.service

SEED_VM_KEYS = {"name", "state", "vcpus", "memory_mb", "is_active"}
SEED_METRICS_ORDER = [
    "name",
    "state",
    "cpu_percent",
    "vcpus",
    "memory_percent",
    "memory_used_mb",
    "memory_total_mb",
    "disk_io",
    "network_io",
]
SEED_METRICS_KEYS = set(SEED_METRICS_ORDER)


def test_seed_read_routes_keep_the_seed_shapes(gateway: GatewayProc) -> None:
    assert gateway.get("/", token=None).status_code == 200

    health = gateway.get("/health", token=None).json()
    assert health["status"] == "healthy" and health["broker_connected"] is True
    assert {h["host"]: h["online"] for h in health["hosts"]} == {"demo-a": True, "demo-b": True}
    assert all(h["libvirt_connected"] for h in health["hosts"])

    vms = gateway.get("/vms").json()
    assert vms["count"] == DEMO_VMS == len(vms["vms"])
    for vm in vms["vms"]:
        assert SEED_VM_KEYS | {"host", "uuid"} <= vm.keys()
        check_seed_vm(vm)
    by_name = {(v["name"], v["host"]): v for v in vms["vms"]}
    assert by_name[("web-01", "demo-a")]["state"] == "running"
    assert by_name[("my vm #1 (test+dev)", "demo-a")]["state"] == "stopped"
    assert by_name[("media 🎬 box", "demo-b")]["vcpus"] == 2

    detail = gateway.get("/vm/web-01").json()
    assert detail.keys() >= SEED_VM_KEYS
    check_seed_vm(detail)
    assert (detail["host"], detail["memory_mb"], detail["is_active"]) == ("demo-a", 2048, True)

    # Names with spaces, '#', '+' and unicode travel URL-encoded.
    odd = gateway.get("/vm/" + requests.utils.quote("my vm #1 (test+dev)", safe="")).json()
    assert odd["uuid"] == "a0000000-0000-4000-8000-000000000004"

    metrics = wait_until(
        lambda: (m := gateway.get("/vm/web-01/metrics").json())["cpu_percent"] is not None and m
    )
    assert metrics.keys() >= SEED_METRICS_KEYS
    assert list(metrics)[: len(SEED_METRICS_KEYS)] == SEED_METRICS_ORDER  # the seed's first
    assert metrics["disk_io"][0].keys() >= {"device", "read_bytes", "write_bytes"}
    assert metrics["network_io"][0].keys() >= {"interface", "rx_bytes", "tx_bytes"}
    check_seed_metrics(metrics)
    # The seed example's types: whole MiB (the test driver reports no memory in use, so
    # memory_used_mb is null here; tests/unit/test_gateway_state.py checks an int passes as
    # one), a float percentage.
    assert type(metrics["memory_total_mb"]) is int and metrics["memory_total_mb"] == 2048
    assert type(metrics["cpu_percent"]) is float
    for vm in vms["vms"]:  # stopped VMs, and VMs whose memory the guest does not report
        check_seed_metrics(gateway.get(f"/vm/{vm['uuid']}/metrics").json())

    summary = gateway.get("/stats/summary").json()
    assert summary["total_vms"] == DEMO_VMS
    assert summary["hosts"] == {"total": 2, "online": 2, "offline": 0}
    assert summary["states"]["running"] + summary["states"]["stopped"] == DEMO_VMS
    assert summary["total_vcpus"] == sum(v["vcpus"] for v in vms["vms"])

    hosts = gateway.get("/hosts").json()
    assert [h["host"] for h in hosts["hosts"]] == ["demo-a", "demo-b"]
    assert gateway.get("/hosts/demo-b").json()["vms_total"] == 3
    assert gateway.get("/hosts/demo-a/vms").json()["count"] == 4
    assert gateway.get("/hosts/nope").status_code == 404


def test_tokens_and_roles_on_rest(gateway: GatewayProc) -> None:
    no_token = gateway.get("/vms", token=None)
    assert no_token.status_code == 401
    assert no_token.json()["error"]["code"] == "unauthorized"
    assert gateway.get("/vms", token="not-a-real-token").status_code == 401

    viewer = gateway.post("/vm/web-01/stop", token="viewer")
    assert viewer.status_code == 403 and viewer.json()["error"]["code"] == "forbidden"
    assert gateway.get("/vm/web-01").json()["state"] == "running"  # nothing was sent

    operator = gateway.post("/vm/web-01/stop", token="operator", json={"force": True})
    assert operator.status_code in (200, 202)
    assert operator.json()["by"] == "bob"  # the token's name is the `by` of the command


def test_action_changes_the_vm_and_its_job_succeeds(gateway: GatewayProc) -> None:
    resp = gateway.post("/vm/web-01/stop")
    assert resp.status_code == 200, resp.text
    job = resp.json()
    assert (job["status"], job["action"], job["state"], job["success"]) == (
        "succeeded",
        "shutdown",
        "stopped",
        True,
    )
    wait_until(lambda: gateway.get("/vm/web-01").json()["state"] == "stopped")
    assert gateway.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"
    assert gateway.get("/jobs").json()["jobs"][0]["id"] == job["id"]

    # Already stopped: succeeds, nothing changed.
    again = gateway.post("/vm/web-01/stop").json()
    assert (again["status"], again["changed"]) == ("succeeded", False)

    started = gateway.post("/vm/web-01/start", json={}).json()
    assert (started["status"], started["state"]) == ("succeeded", "running")
    paused = gateway.post("/vm/web-01/suspend").json()
    assert paused["state"] == "paused"
    assert gateway.post("/vm/web-01/resume").json()["state"] == "running"
    assert gateway.post("/vm/web-01/restart", json={"force": True}).json()["action"] == "reset"

    # The audit trail names who did what.
    def audited() -> bool:
        events = gateway.get("/events?kind=command&host=demo-a").json()["events"]
        return any(e["id"] == job["id"] and e["by"] == "bob" for e in events)

    wait_until(audited)


def test_bad_bodies_are_400(gateway: GatewayProc) -> None:
    assert gateway.post("/vm/web-01/stop", json={"force": "yes"}).status_code == 400
    assert gateway.post("/vm/web-01/stop", json={"timeout_s": -1}).status_code == 400
    assert gateway.post("/vm/web-01/start", json={"timeout_s": 5}).status_code == 400
    assert gateway.post("/vm/web-01/stop?wait=soon").status_code == 400
    bad_json = gateway.post(
        "/vm/web-01/stop", data="{nope", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400


def test_bodies_must_be_json_and_every_body_is_optional(gateway: GatewayProc) -> None:
    """A body is JSON with its type said (Flask's `get_json`, which the seed read bodies with,
    refuses any other type too); a text/plain or form body is what a cross-site page can send
    without asking, so it is 415. Every body is optional (SPEC §4), and `-d null` is JSON."""

    def post(path: str, data: str, ctype: str | None) -> requests.Response:
        headers = {"Content-Type": ctype} if ctype else {}
        return gateway.post(path, data=data.encode(), headers=headers)

    dart = post("/vm/web-01/stop", '{"force": true}', "text/plain; charset=utf-8")
    assert dart.status_code == 415 and dart.json()["error"]["code"] == "unsupported_media_type"
    curl = post("/vm/web-01/restart", '{"force":true}', "application/x-www-form-urlencoded")
    assert curl.status_code == 415, curl.text
    assert gateway.get("/vm/web-01").json()["state"] == "running"  # neither was sent on
    stop = post("/vm/web-01/stop", '{"force": true}', "application/json; charset=utf-8")
    assert stop.status_code == 200, stop.text
    assert (stop.json()["action"], stop.json()["state"]) == ("destroy", "stopped")
    assert post("/vm/web-01/start", "null", "application/json").status_code == 200
    for empty in ("", "  \n"):  # no body, or JSON's whitespace: no body either
        resp = post("/vm/web-01/suspend", empty, "application/json")
        assert resp.status_code == 200, resp.text
        assert post("/vm/web-01/resume", empty, "application/json").status_code == 200
    # An empty body needs no type (the seed's curl lines); whitespace is a body: it needs one.
    assert post("/vm/web-01/suspend", "", None).status_code == 200
    assert post("/vm/web-01/resume", "  \n", None).status_code == 415
    assert post("/vm/web-01/resume", "", None).status_code == 200

    for bad, ctype, says in (
        ("{nope", "application/json", "not valid JSON"),
        ("[true]", "application/json", "JSON object"),
        ('"force"', "application/json", "JSON object"),
        ("\xff", "application/json", "not valid JSON"),
    ):
        resp = post("/vm/web-01/stop", bad, ctype)
        assert resp.status_code == 400, (bad, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "bad_request" and says in error["message"], (bad, error)
    assert gateway.get("/vm/web-01").json()["state"] == "running"  # no bad body was sent on


def test_a_name_on_two_hosts_needs_the_host(gateway: GatewayProc) -> None:
    ambiguous = gateway.get("/vm/shared-vm")
    assert ambiguous.status_code == 409
    body = ambiguous.json()["error"]
    assert body["code"] == "ambiguous_name"
    assert sorted(c["host"] for c in body["candidates"]) == ["demo-a", "demo-b"]
    assert gateway.post("/vm/shared-vm/start").status_code == 409

    on_b = gateway.get("/vm/shared-vm?host=demo-b").json()
    assert (on_b["host"], on_b["state"]) == ("demo-b", "running")
    started = gateway.post("/vm/shared-vm/start?host=demo-a")
    assert started.status_code == 200 and started.json()["state"] == "running"
    by_uuid = gateway.get("/vm/a0000000-0000-4000-8000-000000000003").json()
    assert (by_uuid["name"], by_uuid["host"]) == ("shared-vm", "demo-a")


def test_unknown_vm_or_host_is_404(gateway: GatewayProc) -> None:
    for path in (
        "/vm/ghost",
        "/vm/ghost/metrics",
        "/vm/web-01?host=demo-b",
        "/vm/web-01?host=nowhere",
        "/jobs/nope",
    ):
        resp = gateway.get(path)
        assert resp.status_code == 404, path
        assert resp.json()["error"]["code"]
    assert gateway.post("/vm/ghost/start").status_code == 404


def test_stopped_agent_makes_its_host_offline_and_commands_503(
    demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc]
) -> None:
    # A long accept timeout: a command that was sent (or queued) would wait that long, so
    # "at once" can be told from it with room to spare on a busy machine.
    gateway = start_gateway(KVMSUP_ACCEPT_TIMEOUT="20")
    wait_ready(gateway, timeout=30)
    demo_agents["demo-b"].stop()
    wait_until(lambda: gateway.get("/hosts/demo-b").json()["online"] is False, timeout=20)
    health = gateway.get("/health").json()
    assert (health["hosts_online"], health["hosts_offline"]) == (1, 1)

    t0 = time.monotonic()
    resp = gateway.post("/vm/backup/start")
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "host_offline"
    assert time.monotonic() - t0 < 10.0  # at once, never queued for the 20 s accept timeout
    assert gateway.get("/vm/backup").json()["host_online"] is False
    assert gateway.post("/vm/web-01/stop").status_code == 200  # the other host still works


def test_an_agent_that_does_not_answer_gives_504(
    gateway: GatewayProc, demo_agents: dict[str, Service]
) -> None:
    agent = demo_agents["demo-a"]
    os.kill(agent.pid, signal.SIGSTOP)  # online for the broker until keepalive runs out
    try:
        t0 = time.monotonic()
        resp = gateway.post("/vm/web-01/stop")
        assert resp.status_code == 504, resp.text
        assert resp.json()["error"]["code"] == "agent_timeout"
        # KVMSUP_ACCEPT_TIMEOUT (3 s) past `not_after`'s margin (2 s); not the job's own
        # deadline (the shutdown's 60 s and more): its acceptance is what timed out.
        assert 4.5 < time.monotonic() - t0 < 20
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    # Thawed, the agent reads the request, past its not_after: it refuses it, and that, not
    # the gateway's guess, is what the job and the audit say in the end (the guess is kept).
    job_id = resp.json()["error"]["job"]["id"]
    job = wait_until(
        lambda: (j := gateway.get(f"/jobs/{job_id}").json())["status"] == "rejected" and j,
        timeout=15,
    )
    assert job["error"]["code"] == "expired", job
    assert job["revised"]["status"] == "timed_out"
    assert job["revised"]["error"]["code"] == "agent_timeout"

    def audited() -> list[dict[str, Any]]:
        rows = [a for a in gateway.get("/audit").json()["audit"] if a["id"] == job_id]
        return rows if rows and rows[0]["result"] == "rejected" else []

    audit = wait_until(audited)
    assert audit[0]["revised"]["status"] == "timed_out"
    assert "replaces the gateway's timed_out" in gateway.service.output()


def test_force_stop_preempts_a_graceful_stop_in_flight(
    demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc]
) -> None:
    """A frozen agent holds the graceful stop's job open (no `accepted` yet), as a guest that
    ignores ACPI would; `{"force": true}` must go through, not 409. Other overlaps still 409."""
    # Both commands must still be within their `not_after` when the agent is thawed, whatever
    # the steps in between cost on a busy machine: a long accept timeout here.
    gateway = start_gateway(KVMSUP_ACCEPT_TIMEOUT="25")
    wait_ready(gateway, timeout=30)
    agent = demo_agents["demo-a"]
    os.kill(agent.pid, signal.SIGSTOP)
    with ThreadPoolExecutor(2) as pool:
        try:
            graceful = pool.submit(gateway.post, "/vm/web-01/stop")

            def in_flight(action: str) -> list[dict[str, Any]]:
                jobs = gateway.get("/jobs?host=demo-a").json()["jobs"]
                return [j for j in jobs if j["action"] == action and not j["finished"]]

            pending = wait_until(lambda: in_flight("shutdown"), timeout=10)
            assert gateway.post("/vm/web-01/suspend").status_code == 409
            forced = pool.submit(gateway.post, "/vm/web-01/stop", json={"force": True})

            def forced_sent() -> list[dict[str, Any]] | str:
                # Its job is in flight while the agent is frozen: it was not refused 409.
                if forced.done():
                    resp = forced.result()
                    return f"answered while the agent is frozen: {resp.status_code} {resp.text}"
                return in_flight("destroy")

            seen = wait_until(forced_sent, timeout=10)
            assert isinstance(seen, list), seen
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        forced_resp, graceful_resp = forced.result(), graceful.result()
    assert forced_resp.status_code == 200, forced_resp.text
    job = forced_resp.json()
    assert (job["action"], job["status"], job["state"]) == ("destroy", "succeeded", "stopped")
    assert graceful_resp.status_code == 200, graceful_resp.text
    assert graceful_resp.json()["id"] == pending[0]["id"] and graceful_resp.json()["finished"]
    wait_until(lambda: gateway.get("/vm/web-01").json()["state"] == "stopped", timeout=20)


def test_restarted_gateway_serves_full_state_from_retained_messages(
    gateway: GatewayProc, start_gateway: Callable[..., GatewayProc]
) -> None:
    assert gateway.post("/vm/db-01/stop").status_code == 200
    before = wait_until(
        lambda: (
            (b := gateway.get("/vms").json())
            and all(v["state"] == "stopped" for v in b["vms"] if v["name"] == "db-01")
            and b
        )
    )
    gateway.stop()

    fresh = start_gateway(tokens=gateway.tokens)  # returns once it listens
    # The agents stay idle and connected: they publish a VM's state only when it changes or
    # they (re)connect, so every VM the fresh gateway serves, and its state, can only come
    # from the broker's retained messages. No time bound: on a busy machine the worker still
    # has to start, connect and subscribe before the retained messages come.
    after = wait_ready(fresh, timeout=30)
    key = lambda v: (v["host"], v["uuid"])  # noqa: E731
    assert sorted(after["vms"], key=key) == sorted(before["vms"], key=key)
    assert fresh.get("/hosts").json()["count"] == 2


def test_a_body_over_the_limit_is_413_json_sized_or_chunked(gateway: GatewayProc) -> None:
    big = b'{"force": true' + b" " * (128 * 1024) + b"}"
    resp = gateway.post("/vm/web-01/stop", data=big)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_large"

    def chunked() -> Iterator[bytes]:  # requests sends a generator without Content-Length
        yield b'{"force": true'
        for _ in range(128):
            yield b" " * 1024
        yield b"}"

    resp = gateway.post("/vm/web-01/stop", data=chunked())
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_large"
    assert gateway.get("/vm/web-01").json()["state"] == "running"  # nothing was sent
    small = gateway.post("/vm/web-01/suspend", json={"force": False})  # still serving
    assert small.status_code == 200, small.text
