"""The command executor's deadlines on fake time: no thread, no libvirt, no real wait.

The calls run on the test's thread when the test says (`ManualPool`), so a call can be held
across a deadline exactly; the clock jumps to a deadline when the code waits for it. The same
deadlines against libvirt's test:/// driver and real threads are in
tests/service/test_commands.py.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta

import pytest

from agent import domstate
from agent.commands.deadlines import CommandDeadline, NotBegun
from agent.commands.executor import CommandExecutor
from agent.commands.settings import ExecutorSettings, Pools
from agent.hypervisor import DomainInfo
from agent.hypervisor.operations import Guard
from agent.inventory import Inventory
from shared.messages import CommandReply, CommandRequest
from tests.support.clock import FakeClock, InlinePool, ManualPool

pytestmark = pytest.mark.unit

UUID = "a0000000-0000-4000-8000-000000000001"


class Libvirt:
    """libvirt's truth for one running VM; records the actions that got past their guard."""

    connected = True

    def __init__(self) -> None:
        self.state = domstate.RUNNING
        self.performed: list[str] = []
        self.answered = threading.Event()  # a state read has returned

    def domain_state(self, uuid: str) -> tuple[int, int]:
        self.answered.set()
        return self.state, 0

    def perform(self, uuid: str, action: str, guard: Guard | None = None) -> None:
        with guard() if guard is not None else contextlib.nullcontext():
            self.performed.append(action)
            if action == "suspend":
                self.state = domstate.PAUSED
            elif action == "destroy":
                self.state = domstate.SHUTOFF
            # a shutdown is only asked of the guest, which here never stops by itself


class World:
    """An executor on fake time; `calls` and `jobs` are held until the test runs them, unless
    `inline` (then each runs as it is queued)."""

    def __init__(self, inline: bool = False, **settings: float) -> None:
        self.clock = FakeClock()
        self.hv = Libvirt()
        inventory = Inventory("h")
        inventory.update(DomainInfo(UUID, "vm", domstate.RUNNING, 0, 1, 1024, 1024, False, True))
        pool = InlinePool if inline else ManualPool
        self.calls, self.jobs = pool(), pool()
        self.replies: list[CommandReply] = []
        self.executor = CommandExecutor(
            "h",
            self.hv,  # type: ignore[arg-type]
            inventory,
            lambda *_: None,
            lambda _u: None,
            ExecutorSettings(**settings),  # type: ignore[arg-type]
            self.clock,
            Pools(calls=self.calls, jobs=self.jobs, waits=self.jobs, polls=InlinePool()),
        )

    def submit(
        self, action: str, begin_within: float, request_id: str = "c1", **params: object
    ) -> None:
        request = CommandRequest.model_validate(
            {
                "id": request_id,
                "action": action,
                "vm": UUID,
                "params": params,
                "not_after": self.clock.now() + timedelta(seconds=begin_within),
            }
        )
        self.executor.submit(request, self.replies.append)

    def final(self, request_id: str = "c1") -> CommandReply:
        finals = [r for r in self.replies if r.id == request_id and r.is_final]
        assert len(finals) == 1, self.replies
        return finals[0]


def test_a_command_reported_timed_out_is_never_carried_out_later() -> None:
    # Was tests/service/test_commands.py (a stand-in frozen for real seconds). The state read
    # is with a libvirtd that stopped answering; the job reaches the deadline; then the read
    # returns to a job that gave up, and the action must not follow it.
    world = World(call_timeout=0.2)
    world.submit("suspend", begin_within=30)  # the call deadline (0.2 s) comes first
    world.calls.start()
    world.jobs.run()
    reply = world.final()
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "timeout"
    assert world.clock.elapsed == pytest.approx(0.2)  # answered at the deadline, not later
    world.calls.run()  # libvirtd answers again: the read returns to a job that gave up
    assert world.hv.answered.is_set()
    assert world.hv.performed == [] and world.hv.state == domstate.RUNNING
    assert [r.status for r in world.replies] == ["accepted", "timed_out"]


def test_ids_past_their_not_after_make_room() -> None:
    # Was tests/service/test_commands.py (against test:///, waiting 0.8 real seconds).
    world = World(inline=True, history=2, remember_after=0.0)
    for n in range(2):
        world.submit("reboot", begin_within=0.5, request_id=f"r{n}")
        assert world.final(f"r{n}").status == "succeeded"
    world.submit("suspend", begin_within=5, request_id="early")  # both ids still live
    early = world.final("early")
    assert early.status == "rejected" and early.error is not None
    assert early.error.code == "busy"
    world.clock.advance(0.8)  # past both not_after
    world.submit("suspend", begin_within=5, request_id="later")
    assert world.final("later").status == "succeeded"


def test_a_guest_that_ignores_its_shutdown_is_forced_off_when_timeout_s_is_over() -> None:
    world = World(inline=True)
    world.submit("shutdown", begin_within=5, timeout_s=120, force_after=True)
    reply = world.final()
    assert (reply.status, reply.state, reply.changed, reply.escalated) == (
        "succeeded",
        "stopped",
        True,
        True,
    ), reply
    assert world.hv.performed == ["shutdown", "destroy"]
    assert 120 <= world.clock.elapsed < 121  # the wait's end, then the destroy at once


def test_an_escalation_that_cannot_begin_within_its_grace_is_never_sent() -> None:
    # The call workers are all busy when the guest's time is over: the destroy waits in the
    # queue past `timeout_s` + the grace, the shutdown is answered, and the queue drops it.
    world = World(escalate_grace=5)
    world.submit("shutdown", begin_within=5, timeout_s=10, force_after=True)
    world.calls.run()  # the state read and the shutdown request
    world.jobs.run()  # the wait, then the escalation
    reply = world.final()
    assert reply.status == "timed_out" and reply.escalated is False, reply
    assert reply.error is not None and reply.error.code == "shutdown_timeout"
    assert "not forced off" in reply.error.message
    assert world.clock.elapsed == pytest.approx(15)  # timeout_s, then the grace
    world.calls.run()  # a worker frees up: the destroy was cancelled, it never runs
    assert world.hv.performed == ["shutdown"]


def test_agent_stop_answers_a_command_not_begun_at_once_and_never_begins_it() -> None:
    world = World()
    world.submit("suspend", begin_within=20)
    world.executor.drain(grace=2)
    reply = world.final()
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "agent_stopping" and "nothing was sent" in reply.error.message
    assert world.clock.elapsed == 0  # nothing was open any more: no grace to wait out
    world.calls.run()  # cleared from the queue at the stop: it never runs
    world.jobs.run()
    assert world.hv.performed == [] and not world.hv.answered.is_set()
    assert [r.status for r in world.replies] == ["accepted", "timed_out"]


def test_an_action_begins_only_before_its_deadline() -> None:
    clock = FakeClock()
    deadline = CommandDeadline("c1", clock.monotonic() + 1.0, clock)
    clock.advance(1.0)
    with deadline.acting("suspend"):  # at the deadline: still in time
        pass
    clock.advance(0.001)
    with pytest.raises(NotBegun, match="deadline passed"), deadline.acting("resume"):
        pytest.fail("the action began after its deadline")
    assert [a for a, _ in deadline.begun] == ["suspend"] and deadline.returned == [True]
    assert deadline.expire(1) and deadline.final
