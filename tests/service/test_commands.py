"""The command executor: its decisions against a stand-in, its deadlines against test:///."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from agent import domstate
from agent.commands.executor import CommandExecutor
from agent.commands.settings import ESCALATE_GRACE_S, ExecutorSettings
from agent.errors import HypervisorError
from agent.hypervisor import DomainInfo
from agent.hypervisor.operations import Guard
from agent.inventory import Inventory
from shared.messages import CommandReply, CommandRequest, utc_now
from tests.support.executor import Gate, LiveExecutor

pytestmark = pytest.mark.service

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
        self.asked: list[str] = []  # every action asked for, the ones libvirt refused included
        self.performed: list[str] = []

    def domain_state(self, uuid: str) -> tuple[int, int]:
        self.reads += 1
        return self.state, 0

    def perform(self, uuid: str, action: str, guard: Guard | None = None) -> None:
        self.asked.append(action)
        allowed = {"start": {domstate.SHUTOFF}, "suspend": {domstate.RUNNING}}
        if action in allowed and self.state not in allowed[action]:
            err = HypervisorError(f"cannot {action}: state {self.state}")
            err.code = "invalid_state"
            raise err
        with guard() if guard is not None else contextlib.nullcontext():
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
        hv,  # type: ignore[arg-type]
        inventory,
        lambda *_: None,
        lambda _u: None,
        ExecutorSettings(call_timeout=call_timeout),
    )
    request = CommandRequest(
        id="c1",
        action=action,  # type: ignore[arg-type]
        vm=UUID,
        not_after=utc_now() + timedelta(seconds=call_timeout),
    )
    executor.submit(request, send)
    assert done.wait(5)
    if hv.__class__ is StandIn:
        executor.close_workers(wait=True)
    else:
        executor.close_workers()
    return replies[-1], hv


def test_an_action_reads_libvirt_once_and_replies_the_state_the_call_leaves() -> None:
    reply, hv = run(domstate.RUNNING, domstate.RUNNING, "suspend")
    assert (reply.status, reply.state, reply.changed) == ("succeeded", "paused", True)
    assert hv.performed == ["suspend"] and hv.reads == 1


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
    # The executor's own check refused it, from the state it read: libvirt was never asked
    # (the stand-in would refuse with the same code, so the code alone proves nothing).
    assert hv.asked == [] and hv.reads == 1
    assert reply.error.message == "cannot suspend a VM that is stopped"
    assert reply.state == "stopped"


# -- one deadline, every path: libvirt's test:/// driver, calls held across the deadline ----
# The adapter's `hold` hook is called on the thread about to make a call; a Gate blocks the
# chosen calls until the test releases them, so a call is held exactly across a deadline or
# a reconnect, never timed with sleeps.

DEMO = "demo-a"
WEB = "a0000000-0000-4000-8000-000000000001"  # running in the demo node
OFF = "a0000000-0000-4000-8000-000000000003"  # stopped in the demo node


class Live(LiveExecutor):
    """The executor on the demo node's test:/// driver, with the tunables a test sets."""

    def __init__(
        self,
        call_timeout: float = 30.0,
        workers: int = 4,
        history: int = 2048,
        remember_after: float = 300.0,
        max_shutdowns: int = 64,
        escalate_grace: float = ESCALATE_GRACE_S,
    ) -> None:
        from tests.support.procs import demo_node_uri

        settings = ExecutorSettings(
            workers=workers,
            call_timeout=call_timeout,
            # The product's grace by default: the waiter ends a slice (0.25 s) after the
            # deadline and needs a CPU before the destroy's guard, and the short state reads
            # around an escalation are bounded by it too.
            escalate_grace=escalate_grace,
            history=history,
            remember_after=remember_after,
            max_shutdowns=max_shutdowns,
        )
        super().__init__(demo_node_uri(DEMO), settings)

    def submit(
        self, action: str, vm: str, begin_within: float, request_id: str = "c1", **params: object
    ) -> None:
        self.request(request_id, action, vm, begin_within, params)

    def truth(self, uuid: str) -> str:
        """The VM's state on the current connection, by a fresh listing (no cached handle)."""
        info = next(i for i in self.hv.list_domains() if i.uuid == uuid)
        return domstate.state_name(info.state)


@pytest.fixture
def live() -> Iterator[Callable[..., Live]]:
    made: list[Live] = []

    def make(**kw: float) -> Live:
        made.append(Live(**kw))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for one in made:
        one.close()


# Each action from a state it applies to: (action, vm, state before, state after the action).
ACTIONS = [
    ("suspend", WEB, "running", "paused"),
    ("destroy", WEB, "running", "stopped"),
    ("reboot", WEB, "running", "running"),
    ("reset", WEB, "running", "running"),
    ("start", OFF, "stopped", "running"),
    ("resume", WEB, "paused", "running"),
    ("shutdown", WEB, "running", "stopped"),
]


def prepare(lv: Live, vm: str, before: str) -> None:
    if before == "paused":
        lv.hv.perform(vm, "suspend")
    assert lv.truth(vm) == before


@pytest.mark.parametrize(("action", "vm", "before", "_after"), ACTIONS, ids=[a[0] for a in ACTIONS])
def test_an_action_held_at_its_start_past_the_deadline_is_never_sent(
    live: Callable[..., Live], action: str, vm: str, before: str, _after: str
) -> None:
    # The state read returned in time; the action's call is held on the worker that is about
    # to send it until the deadline passed and the agent answered timed_out. Released, it
    # must not reach libvirt: checking "abandoned" before the call left a gap here.
    lv = live()
    prepare(lv, vm, before)
    gate = Gate("act")
    lv.hv.hold = gate
    lv.submit(action, vm, begin_within=0.3)
    assert gate.reached.wait(10)
    reply = lv.final()
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "timeout", reply
    gate.release.set()
    lv.executor.close_workers(wait=True)  # every call that was running has returned
    assert gate.count("begun") == 0
    assert lv.truth(vm) == before


@pytest.mark.parametrize(("action", "vm", "before", "_after"), ACTIONS, ids=[a[0] for a in ACTIONS])
def test_a_read_held_past_the_deadline_answers_at_not_after_and_sends_nothing(
    live: Callable[..., Live], action: str, vm: str, before: str, _after: str
) -> None:
    # A frozen libvirtd holds the first read: the reply comes at `not_after` (0.3 s), long
    # before the 30 s call deadline, and the thawed read leads to no action.
    lv = live()
    prepare(lv, vm, before)
    gate = Gate("read")
    lv.hv.hold = gate
    lv.submit(action, vm, begin_within=0.3)
    reply = lv.final(timeout=10)
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "timeout"
    gate.release.set()
    lv.executor.close_workers(wait=True)
    assert gate.count("begun") == 0  # it may reach the guard, never past it
    assert lv.truth(vm) == before


@pytest.mark.parametrize(("action", "vm", "before", "after"), ACTIONS, ids=[a[0] for a in ACTIONS])
def test_an_action_begun_before_the_deadline_is_reported_as_done_not_timed_out(
    live: Callable[..., Live], action: str, vm: str, before: str, after: str
) -> None:
    # The action's RPC was sent (its guard let it through) and libvirt answers only after
    # the deadline: the command happened, so the reply waits for it and says so.
    lv = live()
    prepare(lv, vm, before)
    gate = Gate("begun")
    lv.hv.hold = gate
    lv.submit(action, vm, begin_within=1.0, timeout_s=5)
    assert gate.reached.wait(10)
    deadline_over = threading.Event()  # the clock, not a synchronisation: past not_after
    threading.Timer(1.2, deadline_over.set).start()
    assert deadline_over.wait(5)
    assert not lv.has_final(), lv.replies  # no premature timed_out
    gate.release.set()
    reply = lv.final()
    assert (reply.status, reply.changed) == ("succeeded", True), reply
    assert lv.truth(vm) == after


def test_an_action_libvirt_never_answers_is_reported_as_outcome_unknown(
    live: Callable[..., Live],
) -> None:
    lv = live(call_timeout=0.5)
    gate = Gate("begun")
    lv.hv.hold = gate
    lv.submit("suspend", WEB, begin_within=1.0)
    reply = lv.final(timeout=10)
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "outcome_unknown"
    assert "may still take effect" in reply.error.message
    gate.release.set()  # and so it does: the operator was told it might
    lv.executor.close_workers(wait=True)
    assert lv.truth(WEB) == "paused"


def test_a_shutdown_escalation_held_past_its_deadline_is_never_sent(
    live: Callable[..., Live],
) -> None:
    # The guest "ignores" the shutdown (its state reads are held, so the wait sees no stop);
    # the escalation's destroy is then held at its start past `timeout_s` + the grace.
    # The gates hold the calls, so a short grace keeps the test short without racing it.
    lv = live(escalate_grace=0.3)
    gate = Gate("act", skip=1)  # the graceful shutdown passes, the destroy is held
    reads = Gate("read", skip=1)  # the read before passes, the wait's polls are held

    def hold(stage: str, uuid: str) -> None:
        reads(stage, uuid)
        gate(stage, uuid)

    lv.hv.hold = hold
    lv.submit("shutdown", WEB, begin_within=5, timeout_s=0.2, force_after=True)
    assert gate.reached.wait(10)
    reply = lv.final()
    assert reply.status == "timed_out" and reply.escalated is False, reply
    assert reply.error is not None and reply.error.code == "shutdown_timeout"
    assert "not forced off" in reply.error.message
    reads.release.set()
    gate.release.set()
    lv.executor.close_workers(wait=True)
    assert gate.count("begun") == 1  # the graceful shutdown only, never the destroy


def test_a_shutdown_escalation_that_begins_in_time_is_reported(
    live: Callable[..., Live],
) -> None:
    lv = live()
    reads = Gate("read", skip=1)  # the read before passes, the wait's polls are held

    def hold(stage: str, uuid: str) -> None:
        reads(stage, uuid)
        if stage == "begun" and reads.count("begun") == 2:  # the destroy: reads answer again
            reads.release.set()

    lv.hv.hold = hold
    lv.submit("shutdown", WEB, begin_within=5, timeout_s=0.2, force_after=True)
    reply = lv.final(timeout=30)
    reads.release.set()
    # The test driver stops the guest at once, so the destroy may find it off; the point is
    # that the escalation began within its window instead of being refused.
    assert reads.count("begun") == 2, reads.passed
    assert reply.error is None or "not forced off" not in reply.error.message, reply


def test_a_read_held_across_a_reconnect_sends_nothing_on_the_new_connection(
    live: Callable[..., Live],
) -> None:
    # The read is held on the old connection; the deadline passes; the connection is given up
    # and re-opened. Released, the job must not retry the action on the new connection.
    lv = live()
    gate = Gate("read")
    lv.hv.hold = gate
    lv.submit("suspend", WEB, begin_within=0.3)
    assert gate.reached.wait(10)
    assert lv.final().status == "timed_out"
    lv.hv.drop()
    lv.wait_connected(2)
    gate.release.set()
    lv.executor.close_workers(wait=True)
    assert gate.count("begun") == 0
    assert lv.truth(WEB) == "running"


def test_a_handle_fetched_before_a_reconnect_is_not_used_on_the_new_connection(
    live: Callable[..., Live],
) -> None:
    # The domain lookup returns after the connection was replaced: its handle belongs to the
    # old connection, which a thawed libvirtd would still serve. The action must go over the
    # current connection, and the reply must tell the state libvirt has there.
    lv = live()
    gate = Gate("lookup")
    lv.hv.hold = gate
    lv.submit("suspend", WEB, begin_within=20)
    assert gate.reached.wait(10)
    lv.hv.drop()
    lv.wait_connected(2)
    gate.release.set()
    reply = lv.final()
    assert (reply.status, reply.state) == ("succeeded", "paused"), reply
    assert lv.truth(WEB) == "paused"


def test_a_call_queued_behind_busy_workers_never_runs_after_the_deadline(
    live: Callable[..., Live],
) -> None:
    # One call worker, held by a first command; the second command's call waits in the
    # queue past its deadline and is answered timed_out. Released, the queue must not run it.
    lv = live(workers=1)
    gate = Gate("read")
    lv.hv.hold = gate
    lv.submit("reboot", WEB, begin_within=20, request_id="first")
    assert gate.reached.wait(10)
    lv.submit("suspend", WEB, begin_within=0.3, request_id="second")
    reply = lv.final("second")
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "timeout"
    gate.release.set()
    assert lv.final("first").status == "succeeded"
    lv.executor.close_workers(wait=True)
    assert gate.count("read") == 1  # the reboot's read before it; none for "second"
    assert lv.truth(WEB) == "running"


def test_a_command_answered_once_is_never_begun_again(live: Callable[..., Live]) -> None:
    lv = live()
    lv.submit("suspend", WEB, begin_within=5)
    assert lv.final().status == "succeeded"
    lv.hv.perform(WEB, "resume")
    lv.submit("suspend", WEB, begin_within=5)  # a redelivery of the same id
    lv.executor.close_workers(wait=True)
    assert [r.status for r in lv.replies] == ["accepted", "succeeded", "succeeded"]
    assert lv.truth(WEB) == "running"


@pytest.mark.parametrize("code", ["expired", "retained", "bad_request"])
def test_a_refusal_under_a_known_id_never_contradicts_its_reply(
    live: Callable[..., Live], code: str
) -> None:
    # A late redelivery of an accepted id reads as `expired`; a retained copy or a malformed
    # message may carry the same CorrelationData. The id keeps its one outcome.
    from agent.commands.requests import Rejection

    lv = live()
    lv.submit("suspend", WEB, begin_within=5)
    assert lv.final().status == "succeeded"
    lv.executor.reject(Rejection(code, "refused", "c1", "suspend", WEB), lv.send)
    lv.executor.close_workers(wait=True)
    assert [r.status for r in lv.replies] == ["accepted", "succeeded", "succeeded"]
    # An id the agent does not know is refused as before.
    lv.executor.reject(Rejection(code, "refused", "other"), lv.send)
    assert lv.replies[-1].status == "rejected" and lv.replies[-1].id == "other"


def test_a_full_id_cache_answers_busy_instead_of_forgetting_a_live_id(
    live: Callable[..., Live],
) -> None:
    # Every remembered id may still be redelivered before its not_after: the agent refuses
    # new ids rather than forget one, so a later copy of the first never runs again.
    lv = live(history=3)
    for n in range(3):
        lv.submit("reboot", WEB, begin_within=60, request_id=f"r{n}")
        assert lv.final(f"r{n}").status == "succeeded"
    lv.submit("suspend", WEB, begin_within=60, request_id="extra")
    extra = lv.final("extra")
    assert extra.status == "rejected" and extra.error is not None
    assert extra.error.code == "busy"
    lv.submit("reboot", WEB, begin_within=60, request_id="r0")  # a late copy of the first
    lv.executor.close_workers(wait=True)
    assert [r.status for r in lv.replies if r.id == "r0"] == ["accepted", "succeeded", "succeeded"]
    assert lv.truth(WEB) == "running"


def test_a_set_request_takes_no_place_in_the_id_cache(live: Callable[..., Live]) -> None:
    lv = live(history=1)
    for n in range(5):  # plain `set` messages: no reply to repeat, nothing remembered
        request = CommandRequest(
            id=f"set-{n}", action="reboot", vm=WEB, not_after=utc_now() + timedelta(seconds=30)
        )
        lv.executor.submit(request, None)
    lv.submit("reset", WEB, begin_within=5)
    assert lv.final().status != "rejected", lv.replies
    # Taken and carried out: neither refused for want of room nor failed on the way.
    final = lv.final()
    assert (final.status, final.error, final.state) == ("succeeded", None, "running"), lv.replies


def lost_connection(message: str) -> Exception:
    """What libvirt's client raises when libvirtd goes away (or stops answering) mid-call."""
    import libvirt

    exc = libvirt.libvirtError(message)
    exc.err = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, message, 2, None, None, None)
    return exc


@pytest.mark.parametrize(
    "message",
    [
        "End of file while reading data: Input/output error",  # libvirtd restarted
        "connection closed due to keepalive timeout",  # libvirtd stopped answering
    ],
    ids=["restart", "keepalive"],
)
def test_an_action_cut_off_by_a_lost_connection_is_outcome_unknown(
    live: Callable[..., Live], message: str
) -> None:
    # The destroy's RPC went out (its guard let it through), then the connection failed
    # before libvirt answered: it may have happened. Neither `failed` nor `timeout` (which
    # promises nothing was sent) would tell the truth.
    lv = live()

    def hold(stage: str, _uuid: str) -> None:
        if stage == "begun":
            lv.hv.drop()
            raise lost_connection(message)

    lv.hv.hold = hold
    lv.submit("destroy", WEB, begin_within=5)
    reply = lv.final()
    assert reply.status == "timed_out" and reply.error is not None, reply
    assert reply.error.code == "outcome_unknown", reply
    assert "may still take effect" in reply.error.message


def test_a_lost_connection_before_the_action_began_is_still_a_plain_failure(
    live: Callable[..., Live],
) -> None:
    lv = live()

    def hold(stage: str, _uuid: str) -> None:
        if stage == "act":  # before the guard: nothing was sent
            raise lost_connection("End of file while reading data: Input/output error")

    lv.hv.hold = hold
    lv.submit("destroy", WEB, begin_within=5)
    reply = lv.final()
    assert reply.status == "failed" and reply.error is not None, reply
    assert reply.error.code == "libvirt_unavailable"
    lv.hv.hold = None
    lv.wait_connected(2)  # the error gave the connection up
    assert lv.truth(WEB) == "running"


DB = "a0000000-0000-4000-8000-000000000002"  # running in the demo node


def test_a_shutdown_beyond_the_limit_is_refused_busy_not_queued(
    live: Callable[..., Live],
) -> None:
    # One shutdown may wait at a time here (64 in production): the next is told `busy`
    # at once instead of waiting behind it and ending timed_out with nothing sent.
    lv = live(max_shutdowns=1)
    gate = Gate("act")
    lv.hv.hold = gate
    lv.submit("shutdown", WEB, begin_within=20, request_id="first", timeout_s=30)
    assert gate.reached.wait(10)
    lv.submit("shutdown", DB, begin_within=20, request_id="second", timeout_s=30)
    second = lv.final("second", timeout=5)
    assert second.status == "rejected" and second.error is not None
    assert second.error.code == "busy"
    assert [r.status for r in lv.replies if r.id == "second"] == ["rejected"]
    gate.release.set()
    assert lv.final("first").status == "succeeded"


def test_a_destroy_never_waits_behind_a_shutdown_s_state_polls(
    live: Callable[..., Live],
) -> None:
    # One call worker; a shutdown's poll of its guest hangs (a stuck VM). A force-off of
    # another VM must still go through at once.
    lv = live(workers=1)
    polls = Gate("read", skip=1)  # the read before the shutdown passes, its polls hang

    def hold(stage: str, uuid: str) -> None:
        if uuid == WEB:
            polls(stage, uuid)

    lv.hv.hold = hold
    lv.submit("shutdown", WEB, begin_within=5, request_id="stop", timeout_s=30)
    assert polls.reached.wait(10)
    lv.submit("destroy", DB, begin_within=2, request_id="force")
    reply = lv.final("force", timeout=10)
    assert (reply.status, reply.state) == ("succeeded", "stopped"), reply
    polls.release.set()


def test_agent_stop_answers_a_command_not_begun_and_never_begins_it(
    live: Callable[..., Live],
) -> None:
    lv = live()
    gate = Gate("act")
    lv.hv.hold = gate
    lv.submit("suspend", WEB, begin_within=20)
    assert gate.reached.wait(10)
    lv.executor.drain(grace=0.5)
    reply = lv.final(timeout=5)
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "agent_stopping" and "nothing was sent" in reply.error.message
    gate.release.set()
    lv.executor.close_workers(wait=True)
    assert gate.count("begun") == 0 and lv.truth(WEB) == "running"
    assert [r.status for r in lv.replies] == ["accepted", "timed_out"]


def test_agent_stop_ends_a_shutdown_wait_with_a_final_reply(live: Callable[..., Live]) -> None:
    lv = live()
    polls = Gate("read", skip=1)  # the guest "does not stop": every poll of it hangs
    lv.hv.hold = polls
    lv.submit("shutdown", WEB, begin_within=5, timeout_s=300, force_after=True)
    assert polls.reached.wait(10)
    lv.executor.drain(grace=3)
    reply = lv.final(timeout=5)
    assert reply.status == "timed_out" and reply.error is not None, reply
    assert reply.error.code == "agent_stopping" and reply.escalated is False
    assert polls.count("begun") == 1  # the shutdown only: no escalation while stopping
    polls.release.set()


def test_agent_stop_reports_an_action_libvirt_has_not_answered(
    live: Callable[..., Live],
) -> None:
    lv = live()
    gate = Gate("begun")
    lv.hv.hold = gate
    lv.submit("destroy", WEB, begin_within=5)
    assert gate.reached.wait(10)
    lv.executor.drain(grace=0.3)
    reply = lv.final(timeout=5)
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "outcome_unknown"
    lv.submit("reset", WEB, begin_within=5, request_id="late")
    late = lv.final("late", timeout=5)
    assert late.status == "rejected" and late.error is not None
    assert late.error.code == "agent_stopping"
    gate.release.set()


def test_a_guest_that_stops_just_before_the_escalation_is_a_successful_shutdown(
    live: Callable[..., Live],
) -> None:
    # The wait sees no stop (its polls hang) and ends; the guest is off by the time the
    # destroy is sent, which libvirt refuses as invalid. The shutdown did succeed.
    lv = live()
    polls = Gate("read", skip=1)
    acts: list[str] = []

    def hold(stage: str, uuid: str) -> None:
        if stage == "act":
            acts.append(stage)
            if len(acts) == 2:  # the destroy: from now on libvirt answers reads again
                polls.release.set()
        polls(stage, uuid)

    lv.hv.hold = hold
    lv.submit("shutdown", WEB, begin_within=5, timeout_s=0.2, force_after=True)
    reply = lv.final()
    assert len(acts) == 2, acts
    assert (reply.status, reply.state, reply.changed) == ("succeeded", "stopped", True), reply
    assert reply.escalated is False and reply.error is None


def test_agent_stop_with_calls_still_queued_answers_each_once_and_logs_no_crash(
    live: Callable[..., Live], caplog: pytest.LogCaptureFixture
) -> None:
    # One call worker held by a first command; a second waits in the queue. Stopping answers
    # both; clearing the queue afterwards must not turn into a "crashed" job.
    lv = live(workers=1)
    gate = Gate("read")
    lv.hv.hold = gate
    lv.submit("reboot", WEB, begin_within=20, request_id="first")
    assert gate.reached.wait(10)
    lv.submit("suspend", WEB, begin_within=20, request_id="second")
    lv.executor.drain(grace=0.2)
    for request_id in ("first", "second"):
        reply = lv.final(request_id, timeout=5)
        assert reply.error is not None and reply.error.code == "agent_stopping", reply
    gate.release.set()
    lv.executor.close_workers(wait=True)
    assert gate.count("begun") == 0 and lv.truth(WEB) == "running"
    assert len([r for r in lv.replies if r.is_final]) == 2
    assert "crashed" not in caplog.text


def test_a_quick_command_is_answered_when_its_call_returns_and_only_once() -> None:
    # The final reply goes out from the call's worker: it does not wait for the job's own
    # thread (here held busy), and that thread, once it runs, sends nothing more.
    from agent.hypervisor.callpool import DaemonPool

    hv = StandIn(domstate.RUNNING)
    inventory = Inventory("h")
    inventory.update(DomainInfo(UUID, "vm", domstate.RUNNING, 0, 1, 1024, 1024, False, True))
    replies: queue.Queue[CommandReply] = queue.Queue()
    executor = CommandExecutor("h", hv, inventory, lambda *_: None, lambda _u: None)  # type: ignore[arg-type]
    release = threading.Event()
    executor._pools.jobs = DaemonPool(1, "held")
    executor._pools.jobs.submit(lambda: release.wait(10))
    request = CommandRequest(
        id="quick-1", action="suspend", vm=UUID, not_after=utc_now() + timedelta(seconds=30)
    )
    executor.submit(request, replies.put)
    assert replies.get(timeout=5).status == "accepted"
    final = replies.get(timeout=5)  # while the job thread cannot run
    assert (final.status, final.state, final.changed) == ("succeeded", "paused", True)
    release.set()
    deadline = time.monotonic() + 10
    while executor._pending and time.monotonic() < deadline:  # the job thread has run
        time.sleep(0.01)
    assert executor._pending == 0
    executor.close_workers(wait=True)
    assert replies.empty() and hv.performed == ["suspend"]
