"""The command executor's decisions against a stand-in hypervisor (no libvirt, no broker)."""

from __future__ import annotations

import threading
import time

import pytest

from agent import domstate
from agent.commands import CommandExecutor
from agent.errors import HypervisorError
from agent.hypervisor import DomainInfo
from agent.inventory import Inventory
from shared.messages import CommandReply, CommandRequest

pytestmark = pytest.mark.unit

UUID = "a0000000-0000-4000-8000-000000000001"
NEXT = {
    "start": domstate.RUNNING,
    "destroy": domstate.SHUTOFF,
    "suspend": domstate.PAUSED,
    "resume": domstate.RUNNING,
}


class StandIn:
    """libvirt's truth for one VM; refuses an action that does not apply, as libvirt does."""

    connected = True

    def __init__(self, state: int) -> None:
        self.state = state
        self.reads = 0
        self.performed: list[str] = []

    def domain_state(self, uuid: str) -> tuple[int, int]:
        self.reads += 1
        return self.state, 0

    def perform(self, uuid: str, action: str) -> None:
        allowed = {"start": {domstate.SHUTOFF}, "suspend": {domstate.RUNNING}}
        if action in allowed and self.state not in allowed[action]:
            err = HypervisorError(f"cannot {action}: state {self.state}")
            err.code = "invalid_state"
            raise err
        self.performed.append(action)
        self.state = NEXT.get(action, self.state)


def run(
    truth: int, recorded: int, action: str, hv: StandIn | None = None, call_timeout: float = 30
) -> tuple[CommandReply, StandIn]:
    hv = hv or StandIn(truth)
    inventory = Inventory("h")
    inventory.update(DomainInfo(UUID, "vm", recorded, 0, 1, 1024, 1024, False, True))
    done = threading.Event()
    replies: list[CommandReply] = []

    def send(reply: CommandReply) -> None:
        replies.append(reply)
        if reply.status != "accepted":
            done.set()

    executor = CommandExecutor(
        "h",
        hv,
        inventory,
        lambda *_: None,
        lambda _u: None,
        call_timeout=call_timeout,  # type: ignore[arg-type]
    )
    executor.submit(CommandRequest(id="c1", action=action, vm=UUID), send)  # type: ignore[arg-type]
    assert done.wait(5)
    executor.shutdown()
    return replies[-1], hv


def test_an_action_reads_libvirt_before_and_after() -> None:
    reply, hv = run(domstate.RUNNING, domstate.RUNNING, "suspend")
    assert (reply.status, reply.state, reply.changed) == ("succeeded", "paused", True)
    assert hv.performed == ["suspend"] and hv.reads == 2


def test_a_record_behind_libvirt_never_decides() -> None:
    # Recorded running, really stopped: `start` starts it, not "already running".
    reply, hv = run(domstate.SHUTOFF, domstate.RUNNING, "start")
    assert (reply.status, reply.state, reply.changed) == ("succeeded", "running", True)
    assert hv.performed == ["start"]
    # Recorded stopped, really running: nothing to do.
    reply, hv = run(domstate.RUNNING, domstate.SHUTOFF, "start")
    assert (reply.status, reply.state, reply.changed) == ("succeeded", "running", False)
    assert hv.performed == []


def test_an_action_that_cannot_apply_fails_with_invalid_state() -> None:
    reply, hv = run(domstate.SHUTOFF, domstate.SHUTOFF, "suspend")
    assert reply.status == "failed" and reply.error is not None
    assert reply.error.code == "invalid_state" and hv.performed == []


class Frozen(StandIn):
    """A libvirtd that stops answering (SIGSTOP) until `thaw` is set."""

    def __init__(self, state: int) -> None:
        super().__init__(state)
        self.thaw = threading.Event()

    def domain_state(self, uuid: str) -> tuple[int, int]:
        self.thaw.wait(10)
        return super().domain_state(uuid)


def test_a_command_reported_timed_out_is_never_carried_out_later() -> None:
    hv = Frozen(domstate.RUNNING)
    reply, _ = run(domstate.RUNNING, domstate.RUNNING, "suspend", hv=hv, call_timeout=0.2)
    assert reply.status == "timed_out"
    hv.thaw.set()  # libvirtd answers again: the read returns to a job that gave up
    time.sleep(0.3)
    assert hv.performed == [] and hv.state == domstate.RUNNING
