"""Lifecycle on real guests, seen by users: Socket.IO pushes and the REST commands (issue 4)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import libvirt

from tests.e2e.conftest import REPORT
from tests.e2e.stack import Stack
from tests.support.gateway import wait_until
from tests.support.guests import Guest
from tests.support.libvirtd import Libvirtd

PUSH_BUDGET_S = 1.0


def virsh(uri: str, *args: str) -> float:
    """Run virsh against the private daemon; returns the monotonic time it returned."""
    subprocess.run(["virsh", "-q", "-c", uri, *args], check=True, capture_output=True, timeout=30)
    return time.monotonic()


def domain_state(uri: str, uuid: str) -> int:
    """libvirt's own truth, on a connection of the test's."""
    conn = libvirt.open(uri)
    try:
        return int(conn.lookupByUUIDString(uuid).state()[0])
    finally:
        conn.close()


def test_virsh_start_and_destroy_reach_socketio_within_a_second(
    libvirtd: Libvirtd, stack: Stack, make_guest: Callable[..., Guest]
) -> None:
    guest = make_guest("idle", start=False)
    stack.wait_vm(guest.name, "stopped")
    sio = stack.sio()
    try:
        returned = virsh(libvirtd.uri, "start", guest.name)
        at, pushed = sio.first_state(guest.uuid, "running", since=returned - 5)
        start_lag = at - returned
        assert (pushed["name"], pushed["host"], pushed["is_active"]) == (
            guest.name,
            stack.host,
            True,
        )

        returned = virsh(libvirtd.uri, "destroy", guest.name)
        at, pushed = sio.first_state(guest.uuid, "stopped", since=at)
        destroy_lag = at - returned
        assert pushed["is_active"] is False
    finally:
        sio.close()
    REPORT["virsh_start_to_sio_ms"] = round(1000 * start_lag, 1)
    REPORT["virsh_destroy_to_sio_ms"] = round(1000 * destroy_lag, 1)
    assert start_lag < PUSH_BUDGET_S
    assert destroy_lag < PUSH_BUDGET_S
    assert stack.vm(guest.name)["state"] == "stopped"


def command(
    stack: Stack, name: str, verb: str, body: dict[str, Any] | None = None, wait: float = 20
) -> dict[str, Any]:
    """POST a seed-style command and return the finished job (200 within `wait`)."""
    resp = stack.gateway.post(f"/vm/{name}/{verb}?wait={wait}", json=body)
    assert resp.status_code == 200, (verb, resp.status_code, resp.text)
    job: dict[str, Any] = resp.json()
    assert job["finished"] is True, job
    return job


def test_rest_commands_drive_a_real_guest(
    libvirtd: Libvirtd, stack: Stack, make_guest: Callable[..., Guest]
) -> None:
    guest = make_guest("idle")
    stack.wait_vm(guest.name, "running")
    steps: list[tuple[str, dict[str, Any] | None, str, str, int]] = [
        # verb, body, the agent's action, the state REST reports, libvirt's own state
        ("stop", {"force": True}, "destroy", "stopped", libvirt.VIR_DOMAIN_SHUTOFF),
        ("start", None, "start", "running", libvirt.VIR_DOMAIN_RUNNING),
        ("suspend", None, "suspend", "paused", libvirt.VIR_DOMAIN_PAUSED),
        ("resume", None, "resume", "running", libvirt.VIR_DOMAIN_RUNNING),
        ("restart", {"force": True}, "reset", "running", libvirt.VIR_DOMAIN_RUNNING),
        # A boot sector has no ACPI handling: the reboot request is sent, the guest runs on.
        ("restart", None, "reboot", "running", libvirt.VIR_DOMAIN_RUNNING),
    ]
    took = {}
    for verb, body, action, state, truth in steps:
        t0 = time.monotonic()
        job = command(stack, guest.name, verb, body)
        took[action] = round(1000 * (time.monotonic() - t0), 1)
        assert (job["action"], job["status"], job["state"], job["by"]) == (
            action,
            "succeeded",
            state,
            "bob",
        ), job
        assert job["changed"] is True, job
        assert domain_state(libvirtd.uri, guest.uuid) == truth, (verb, body)
        assert stack.vm(guest.name)["state"] == state
    REPORT["rest_command_ms"] = took

    # A reset is a reboot as libvirt sees it (VIR_DOMAIN_EVENT_ID_REBOOT), in the audit trail.
    # The agent publishes a command's outcome event after its reply, and the gateway's store
    # writes events on its own thread: the last ones may land after the command returned.
    def audited() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = stack.gateway.get(f"/events?vm={guest.uuid}").json()[
            "events"
        ]
        assert any(e["kind"] == "reboot" for e in events), events
        assert {e.get("action") for e in events if e["kind"] == "command"} >= {
            "destroy",
            "start",
            "suspend",
            "resume",
            "reset",
            "reboot",
        }, events
        return events

    wait_until(audited, timeout=30)

    # Asking for what already is: succeeded, changed false, nothing done.
    again = command(stack, guest.name, "resume")
    assert (again["status"], again["changed"]) == ("succeeded", False)


def test_graceful_stop_of_a_guest_that_ignores_acpi(
    libvirtd: Libvirtd, stack: Stack, make_guest: Callable[..., Guest]
) -> None:
    forced, kept = make_guest("idle"), make_guest("idle")
    for g in (forced, kept):
        stack.wait_vm(g.name, "running")
    timeout_s = 1.5
    # Both at once (one job per VM): 202 at once, then the jobs are followed on /jobs/<id>.
    jobs = {}
    for g, body in (
        (forced, {"timeout_s": timeout_s, "force_after": True}),
        (kept, {"timeout_s": timeout_s}),
    ):
        resp = stack.gateway.post(f"/vm/{g.name}/stop?wait=0", json=body)
        assert resp.status_code == 202, resp.text
        assert resp.headers["Location"] == f"/jobs/{resp.json()['id']}"
        jobs[g.uuid] = resp.json()["id"]
    t0 = time.monotonic()
    # While the guests are asked to stop, libvirt still says running; the product says
    # shutting_down (retained state, so Home Assistant's state sensor too), then running again
    # for the guest whose shutdown timed out.
    for g in (forced, kept):
        stack.client.wait_state(g.uuid, "shutting_down", timeout=timeout_s, since=t0 - 1)
    stack.client.wait_state(kept.uuid, "running", timeout=timeout_s + 15, since=t0 + timeout_s / 2)

    def finished(job_id: str) -> dict[str, Any]:
        return stack.poll(f"/jobs/{job_id}", lambda j: bool(j["finished"]), timeout_s + 15)

    escalated = finished(jobs[forced.uuid])
    timed_out = finished(jobs[kept.uuid])
    assert time.monotonic() - t0 >= timeout_s - 0.2  # the guest really was given its time
    assert (
        escalated["action"],
        escalated["status"],
        escalated["escalated"],
        escalated["state"],
    ) == ("shutdown", "succeeded", True, "stopped"), escalated
    assert domain_state(libvirtd.uri, forced.uuid) == libvirt.VIR_DOMAIN_SHUTOFF

    assert (timed_out["action"], timed_out["status"]) == ("shutdown", "timed_out"), timed_out
    assert timed_out["escalated"] is not True
    assert timed_out["error"]["code"] == "shutdown_timeout"
    assert domain_state(libvirtd.uri, kept.uuid) == libvirt.VIR_DOMAIN_RUNNING
    assert stack.vm(kept.name)["state"] == "running"
    assert stack.vm(forced.name)["state"] == "stopped"
