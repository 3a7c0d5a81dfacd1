"""A graceful shutdown that waits on a guest never holds up a force-off (agent, over MQTT)."""

from __future__ import annotations

import time
from collections.abc import Callable

import libvirt

from tests.e2e.stack import Stack
from tests.e2e.test_lifecycle import domain_state
from tests.support.guests import Guest
from tests.support.libvirtd import Libvirtd


def test_destroy_preempts_a_waiting_shutdown_and_shutdowns_are_not_stacked(
    libvirtd: Libvirtd, stack: Stack, make_guest: Callable[..., Guest]
) -> None:
    guests = [make_guest("idle") for _ in range(3)]
    for g in guests:
        stack.wait_vm(g.name, "running")
    client = stack.client
    # Graceful stops the boot-sector guests ignore: each waits its whole timeout in the agent.
    waiting = {g.uuid: client.request("shutdown", g.uuid, params={"timeout_s": 20}) for g in guests}
    for g in guests:
        client.wait_state(g.uuid, "shutting_down", timeout=5, since=0)

    # A second shutdown of the same VM is refused, not queued behind the first.
    again = client.call("shutdown", guests[0].uuid, params={"timeout_s": 20}, timeout=5)
    assert again["status"] == "rejected" and again["error"]["code"] == "in_progress"

    # Force-off goes through at once, while all three shutdowns still wait.
    t0 = time.monotonic()
    forced = client.call("destroy", guests[0].uuid, timeout=10)
    assert forced["status"] == "succeeded" and forced["state"] == "stopped"
    assert time.monotonic() - t0 < 5
    assert domain_state(libvirtd.uri, guests[0].uuid) == libvirt.VIR_DOMAIN_SHUTOFF

    # The shutdown that was waiting on it ends as soon as the guest is off: succeeded, stopped.
    done = client.wait_final(waiting[guests[0].uuid], timeout=10)
    assert done["status"] == "succeeded" and done["state"] == "stopped", done
    assert not done.get("escalated")
    # The others are still waiting: no reply yet, the guests still run.
    for g in guests[1:]:
        assert [r["status"] for r in client.replies(waiting[g.uuid])] == ["accepted"]
        assert domain_state(libvirtd.uri, g.uuid) == libvirt.VIR_DOMAIN_RUNNING
    for g in guests[1:]:
        assert client.call("destroy", g.uuid, timeout=10)["status"] == "succeeded"
