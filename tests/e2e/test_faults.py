"""libvirtd killed, restarted and frozen under a running agent and gateway (issue 4)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from tests.e2e.conftest import REPORT
from tests.e2e.stack import Stack, running_stack
from tests.support.guests import Guest
from tests.support.libvirtd import Libvirtd


@pytest.fixture
def fault_stack(libvirtd_faults: Libvirtd, tmp_path: Path) -> Iterator[Stack]:
    """Like `stack`, on the daemon this file kills and freezes (healed after each test)."""
    with running_stack(tmp_path, libvirtd_faults.uri) as s:
        yield s


def wait_status(stack: Stack, since: float, connected: bool, timeout: float) -> float:
    """When the agent's retained host status first said libvirt_connected == `connected`."""
    topic = stack.client.topics.host_status(stack.host)
    found = stack.recorder.wait_for(
        lambda m: (
            m.topic == topic
            and m.at >= since
            and m.json().get("online") is True
            and m.json().get("libvirt_connected") is connected
        ),
        timeout,
    )
    return found[0].at


def test_libvirtd_killed_and_restarted(
    libvirtd_faults: Libvirtd, fault_stack: Stack, make_guest: Callable[..., Guest]
) -> None:
    env, stack = libvirtd_faults, fault_stack
    running = make_guest("idle")
    late = make_guest("idle", start=False)
    stack.wait_vm(running.name, "running")
    stack.wait_vm(late.name, "stopped")
    agent_pid = stack.agent.pid

    t_kill = time.monotonic()
    env.kill9()
    lost = wait_status(stack, t_kill, connected=False, timeout=10)
    # The gateway keeps serving its cache while libvirt is away, and says so.
    health = stack.gateway.get("/health", token=None).json()
    assert health["status"] == "degraded" and health["libvirt_connected"] is False, health
    assert stack.vm(running.name)["state"] == "running"

    # The agent retries with backoff (0.5, 1, 2 s...). The guest below must start while the
    # agent is still out: the agent is held (SIGSTOP) from one failed retry until libvirtd is
    # back and the guest runs, so a slow restart on a busy machine cannot let it in first.
    stack.agent.wait_log("retrying in 2.0s", timeout=10)
    os.kill(agent_pid, signal.SIGSTOP)
    try:
        env.restart()
        conn = libvirt.open(env.uri)
        try:
            conn.lookupByUUIDString(late.uuid).create()
        finally:
            conn.close()
    finally:
        os.kill(agent_pid, signal.SIGCONT)
    t_restart = time.monotonic()
    back = wait_status(stack, t_restart, connected=True, timeout=10)
    REPORT["agent_saw_libvirtd_gone_s"] = round(lost - t_kill, 2)
    REPORT["agent_reconnect_s"] = round(back - t_restart, 2)
    assert back - t_restart < 10
    assert stack.agent.alive() and stack.agent.pid == agent_pid  # no restart of the agent

    stack.wait_vm(late.name, "running", timeout=5)
    stack.wait_vm(running.name, "running", timeout=5)
    # Commands work on the new connection.
    resp = stack.gateway.post(f"/vm/{late.name}/stop?wait=10", json={"force": True})
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text
    # Events flow on the new connection (the callbacks were registered again).
    conn = libvirt.open(env.uri)
    try:
        conn.lookupByUUIDString(running.uuid).suspend()
    finally:
        conn.close()
    stack.wait_vm(running.name, "paused", timeout=2)


def test_libvirtd_frozen_then_thawed(
    libvirtd_faults: Libvirtd, fault_stack: Stack, make_guest: Callable[..., Guest]
) -> None:
    env, stack = libvirtd_faults, fault_stack
    guest = make_guest("idle")
    stack.wait_vm(guest.name, "running")
    stack.metrics(guest.uuid, lambda v: v["cpu_percent"] is not None)
    agent_pid = stack.agent.pid
    topic = stack.client.topics.host_metrics(stack.host)

    with env.frozen():
        t_freeze = time.monotonic()
        # The tick must not stall: the VM is reported stale, with no made-up figures.
        stale = stack.metrics(guest.uuid, lambda v: v["stale"], timeout=5, since=t_freeze)
        REPORT["freeze_to_stale_s"] = round(time.monotonic() - t_freeze, 2)
        assert stale["cpu_percent"] is None
        # A command cannot complete: 202 now, then the job ends timed_out (or the gateway 504s).
        resp = stack.gateway.post(f"/vm/{guest.name}/suspend?wait=1")
        assert resp.status_code in (202, 504), resp.text
        job_id = resp.json()["id"] if resp.status_code == 202 else resp.json()["error"]["job"]
        # Reads are served from the gateway's cache meanwhile, promptly.
        for path in ("/vms", f"/vm/{guest.name}", f"/vm/{guest.name}/metrics", "/hosts"):
            t0 = time.monotonic()
            assert stack.gateway.get(path).status_code == 200, path
            assert time.monotonic() - t0 < 0.5, path
        job = stack.poll(f"/jobs/{job_id}", lambda j: bool(j["finished"]), 40)
        REPORT["frozen_command_ended_s"] = round(time.monotonic() - t_freeze, 1)
        # The agent's own answer at the request's not_after: the suspend was not sent, and
        # will not be (not a guess of the gateway's, not "it may still happen").
        assert job["status"] == "timed_out", job
        assert job["error"]["code"] == "timeout", job
        # The liveness probe (no answer within 15 s) gives the connection up: the host says so.
        lost = wait_status(stack, t_freeze, connected=False, timeout=30)
        REPORT["freeze_to_libvirt_disconnected_s"] = round(lost - t_freeze, 1)
        ticks = len([m for m in stack.recorder.on(topic) if m.at > t_freeze])
        assert ticks >= 2, "the agent's tick stalled on the frozen libvirtd"
        assert stack.gateway.get("/health", token=None).json()["libvirt_connected"] is False

    t_thaw = time.monotonic()
    # The read the job gave up on returns now (or fails): only then is the check below final.
    stack.agent.wait_log(f"command {job_id}: the libvirt call held past its deadline", 30)
    back = wait_status(stack, t_thaw, connected=True, timeout=15)
    REPORT["thaw_to_reconnect_s"] = round(back - t_thaw, 2)
    conn = libvirt.open(env.uri)
    try:
        state, reason = conn.lookupByUUIDString(guest.uuid).state()
    finally:
        conn.close()
    assert state == libvirt.VIR_DOMAIN_RUNNING, f"libvirt says state {state}, reason {reason}"
    # Only batches from after the thaw: the first "fresh" batch ever may be from the guest's
    # start, when QEMU still holds it paused ("starting up") -- that is not a late suspend.
    fresh = stack.metrics(
        guest.uuid, lambda v: not v["stale"] and v["cpu_percent"] is not None, since=t_thaw
    )
    assert fresh["state"] == "running", fresh
    resp = stack.gateway.post(f"/vm/{guest.name}/suspend?wait=10")
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text
    assert stack.agent.pid == agent_pid and stack.agent.alive()
