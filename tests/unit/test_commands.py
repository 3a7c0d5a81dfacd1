"""The command executor's decisions against a stand-in hypervisor (no libvirt, no broker)."""

from __future__ import annotations

import threading

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


def run(truth: int, recorded: int, action: str) -> tuple[CommandReply, StandIn]:
    hv = StandIn(truth)
    inventory = Inventory("h")
    inventory.update(DomainInfo(UUID, "vm", recorded, 0, 1, 1024, 1024, False, True))
    done = threading.Event()
    replies: list[CommandReply] = []

    def send(reply: CommandReply) -> None:
        replies.append(reply)
        if reply.status != "accepted":
            done.set()

    executor = CommandExecutor("h", hv, inventory, lambda *_: None, lambda _u: None)  # type: ignore[arg-type]
    executor.submit(CommandRequest(id="c1", action=action, vm=UUID), send)  # type: ignore[arg-type]
    assert done.wait(5)
    executor.shutdown()
    return replies[-1], hv


def test_the_usual_path_reads_libvirt_once_after_the_action() -> None:
    reply, hv = run(domstate.RUNNING, domstate.RUNNING, "suspend")
    assert (reply.status, reply.state, reply.changed) == ("succeeded", "paused", True)
    assert hv.performed == ["suspend"] and hv.reads == 1


def test_a_record_behind_libvirt_never_makes_a_wrong_no_op() -> None:
    # Recorded running, really stopped: `start` must start it, not answer "already running".
    reply, hv = run(domstate.SHUTOFF, domstate.RUNNING, "start")
    assert (reply.status, reply.state, reply.changed) == ("succeeded", "running", True)
    assert hv.performed == ["start"]


def test_a_record_behind_libvirt_turns_a_refusal_into_a_no_op() -> None:
    # Recorded stopped, really running: libvirt refuses the start, a fresh read says done.
    reply, hv = run(domstate.RUNNING, domstate.SHUTOFF, "start")
    assert (reply.status, reply.state, reply.changed) == ("succeeded", "running", False)
    assert hv.performed == []


def test_an_action_that_cannot_apply_fails_with_invalid_state() -> None:
    reply, hv = run(domstate.SHUTOFF, domstate.SHUTOFF, "suspend")
    assert reply.status == "failed" and reply.error is not None
    assert reply.error.code == "invalid_state" and hv.performed == []
