"""Runs command requests: once per id, bounded workers, libvirt calls with deadlines, escalation.

Flow (SPEC §3): a request that passes validation is answered `accepted`, then exactly one final
reply: `succeeded` (with `changed:false` when the VM already was as asked), `failed`,
`rejected` or `timed_out`. Every final outcome is also published on `events` (the audit trail).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial

from agent.commands.requests import Rejection
from agent.commands.tickets import NotBegun, Ticket
from agent.commands.transitions import AFTER, ALLOWED_FROM, TARGET
from agent.errors import AgentError, CallTimeout, HypervisorUnavailable, OutcomeUnknown
from agent.hypervisor import Hypervisor
from agent.hypervisor.callpool import CallPool, DaemonPool
from agent.hypervisor.operations import Guard
from agent.inventory import Inventory
from shared.messages import (
    CommandReply,
    CommandRequest,
    ErrorInfo,
    ReplyStatus,
    VmStateName,
    utc_now,
)

logger = logging.getLogger(__name__)

Reply = Callable[[CommandReply], None]

# A shutdown's escalation to destroy may begin up to this long after its wait for the guest
# ended (`timeout_s` after the shutdown was sent), and never later: the margin covers the
# scheduling of the waiting thread, not a slow libvirtd.
ESCALATE_GRACE_S = 5.0
# An id is remembered until this long after its `not_after`: a copy arriving later is refused
# as `expired` by the decoder anyway, so forgetting the id then can never run it twice.
REMEMBER_AFTER_S = 300.0
# Shutdowns waiting for their guests at once; one more is refused `busy` rather than queued
# behind minutes-long waits (it would then always end timed_out, nothing sent).
MAX_SHUTDOWNS = 64
# On agent stop, an action already sent has this long to be answered before the agent reports
# it outcome_unknown and lets the MQTT connection go.
STOP_GRACE_S = 2.0


@dataclass
class _Entry:
    reply: CommandReply
    keep_until: float  # monotonic; kept at least this long, and while not final


@dataclass
class _Progress:
    """What a call worker found and did for one command (read by the job thread)."""

    before: VmStateName | None = None
    acted: bool = False
    after: VmStateName | None = None


@dataclass
class _Job:
    request: CommandRequest
    send: Reply | None
    ticket: Ticket
    progress: _Progress = field(default_factory=_Progress)
    # The first call (the state before, the action): started at admission, on a call worker.
    first: Future[None] | None = None
    # Set once the first call returned and its worker is done answering (or chose not to).
    settled: threading.Event = field(default_factory=threading.Event)


def _cut_off(ticket: Ticket, exc: AgentError) -> OutcomeUnknown | None:
    """A transport error (or libvirt's own call timeout) from an action whose RPC was sent:
    libvirt may have carried it out, so this is outcome_unknown, not a failure nor `timeout`
    (which promises that nothing was sent)."""
    action = ticket.cut_off
    if action is None or not isinstance(exc, HypervisorUnavailable | CallTimeout):
        return None
    return OutcomeUnknown(
        f"libvirt was asked to {action} and the connection failed before it answered "
        f"({exc}): it may still take effect"
    )


def _late_call_ended(request_id: str, sent: str, future: Future[None]) -> None:
    """A call a command stopped waiting for has returned (after a thaw, say): logged with
    what it means, since the command's final reply is already out."""
    exc = future.exception()
    logger.info(
        "command %s: the libvirt call held past its deadline returned (%s); %s",
        request_id,
        f"{type(exc).__name__}: {exc}" if exc else "ok",
        sent,
    )


class CommandExecutor:
    """Accepts requests from the service's dispatcher thread; runs them in its own workers."""

    def __init__(
        self,
        host: str,
        hypervisor: Hypervisor,
        inventory: Inventory,
        on_outcome: Callable[[CommandRequest | None, CommandReply], None],
        on_change: Callable[[str], None],
        workers: int = 4,
        call_timeout: float = 30.0,
        history: int = 2048,
        escalate_grace: float = ESCALATE_GRACE_S,
        remember_after: float = REMEMBER_AFTER_S,
        max_shutdowns: int = MAX_SHUTDOWNS,
    ) -> None:
        self.host = host
        self._hv = hypervisor
        self._inventory = inventory
        self._on_outcome = on_outcome
        self._on_change = on_change
        self._calls = CallPool(workers)
        self._max_pending = workers * 8
        # One thread per admitted command: a job never waits in a queue while its deadline runs.
        # Daemon threads (see DaemonPool): a stopping agent never waits for a job at exit.
        self._jobs = DaemonPool(self._max_pending, "command")
        self._pending = 0
        # A shutdown may wait minutes for its guest: it waits on a pool of its own, one per VM,
        # so quick commands (destroy above all) are never queued behind it.
        self._waits = DaemonPool(max_shutdowns, "shutdown")
        self._max_shutdowns = max_shutdowns  # the VMs shutting down are the inventory's
        # The waits' once-a-second state polls have workers of their own: a poll hung on a
        # stuck VM never holds a call worker a destroy needs.
        self._polls = CallPool(4)
        self._call_timeout = call_timeout
        self._escalate_grace = escalate_grace
        self._seen: OrderedDict[str, _Entry] = OrderedDict()
        self._history = history
        self._remember_after = remember_after
        self._lock = threading.Lock()
        # Jobs accepted whose final reply is not out yet; the first to answer one takes it.
        self._open: dict[str, _Job] = {}
        self._closed = threading.Condition(self._lock)
        self._stopping = threading.Event()

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Before the agent's MQTT connection goes: every accepted command gets its final reply.
        One whose action has not begun never will (`timed_out`, `agent_stopping`, nothing
        sent); shutdown waits end now; an action already sent has `grace` to be answered,
        then is reported `outcome_unknown`. New requests are refused `agent_stopping`."""
        self._stopping.set()
        with self._lock:
            jobs = list(self._open.values())
        for job in jobs:
            if job.ticket.expire(0):
                self._finish(
                    job,
                    self._final(
                        job.request,
                        "timed_out",
                        error=ErrorInfo(
                            code="agent_stopping",
                            message="the agent stopped before the action began: nothing was sent",
                        ),
                    ),
                )
        until = time.monotonic() + grace
        with self._closed:
            self._closed.wait_for(lambda: not self._open, max(0.0, until - time.monotonic()))
            jobs = list(self._open.values())
        for job in jobs:
            job.ticket.close()
            action = job.ticket.begun[-1][0] if job.ticket.begun else job.request.action
            self._finish(
                job,
                self._final(
                    job.request,
                    "timed_out",
                    error=ErrorInfo(
                        code="outcome_unknown",
                        message=f"the agent stopped before libvirt answered its {action}: "
                        "it may still take effect",
                    ),
                ),
            )
        self.shutdown()

    def shutdown(self, wait: bool = False) -> None:
        """`wait`: until every job and libvirt call already running has returned (tests)."""
        self._jobs.shutdown(wait=wait, cancel_futures=True)
        self._waits.shutdown(wait=wait, cancel_futures=True)
        self._calls.shutdown(wait=wait)
        self._polls.shutdown(wait=wait)

    # -- intake -----------------------------------------------------------------------------
    def reject(
        self, rejection: Rejection, send: Reply | None, request: CommandRequest | None = None
    ) -> None:
        if rejection.id is not None:
            with self._lock:
                entry = self._seen.get(rejection.id)
            if entry is not None:
                # An id already answered (accepted, running or done): a late redelivery that
                # now reads as expired, a retained copy, a malformed message carrying its
                # CorrelationData. Refusing it would be a second, contradicting reply.
                logger.warning(
                    "command %s refused (%s: %s) but already known: re-sending its %s reply",
                    rejection.id,
                    rejection.code,
                    rejection.message,
                    entry.reply.status,
                )
                if send is not None:
                    send(entry.reply)
                return
        reply = CommandReply(
            id=rejection.id,
            host=self.host,
            status="rejected",
            action=rejection.action,
            vm=rejection.vm,
            error=rejection.error,
        )
        logger.warning(
            "command %s rejected: %s (%s)", rejection.id, rejection.code, rejection.message
        )
        if request is not None and send is not None:
            # Only a decoded request's id, which a copy could repeat (a QoS 1 redelivery):
            # the copy then gets this reply instead of running. A `set` has no reply to repeat.
            self._remember(request, reply)
        if send is not None:
            send(reply)
        self._on_outcome(request, reply)

    def submit(self, request: CommandRequest, send: Reply | None) -> None:
        """Validates against what the agent knows, replies `accepted`, queues the job."""
        with self._lock:
            entry = self._seen.get(request.id)
        if entry is not None:
            # A repeated id (QoS 1 redelivery, a retry): the cached reply, never a second run.
            logger.info(
                "command %s seen before: re-sending its %s reply", request.id, entry.reply.status
            )
            if send is not None:
                send(entry.reply)
            return
        vm = self._inventory.get(request.vm)
        if send is not None and not self._room():
            # Every remembered id may still be redelivered and must not run twice: forgetting
            # one to make room could, so the new request waits for ids to age out instead.
            refusal: tuple[str, str] | None = (
                "busy",
                "too many recent command ids to keep track of; retry later",
            )
        else:
            refusal = self._refusal(request.vm, request.action, vm is None)
        if refusal is not None:
            code, message = refusal
            self.reject(
                Rejection(code, message, request.id, request.action, request.vm), send, request
            )
            return
        assert vm is not None
        accepted = CommandReply(
            id=request.id,
            host=self.host,
            status="accepted",
            action=request.action,
            vm=request.vm,
            name=vm.name,
            state=vm.state,
        )
        ticket = Ticket(request.id, self._begin_by(request))
        if send is not None:
            self._remember(request, accepted)
            send(accepted)
        job = _Job(request, send, ticket)
        with self._lock:
            self._open[request.id] = job
        # The first call starts now, beside the job's thread rather than from it: the job
        # thread only keeps the deadline, and a thread hop less is a shorter round trip.
        job.first = self._start_first(job)
        pool = self._waits if request.action == "shutdown" else self._jobs
        pool.submit(partial(self._run_job, job))

    def _start_first(self, job: _Job) -> Future[None]:
        """Queues the job's first call. A command that is over once it returns (all but a
        shutdown) is answered by that call's worker as soon as it returns, unless a deadline
        or the agent's stop has decided the command's end first (then that path answers)."""
        try:
            future = self._calls.submit(
                partial(self._attempt, job.request, job.ticket, job.progress)
            )
        except RuntimeError:  # the pool is shut down: the agent stops, the call never runs
            future = Future()
            future.cancel()
            job.settled.set()
            return future
        if job.request.action != "shutdown":
            future.add_done_callback(partial(self._answer_on_return, job))
        else:
            future.add_done_callback(lambda _f: job.settled.set())
        return future

    def _begin_by(self, request: CommandRequest) -> float:
        """The monotonic instant after which the command's action may no longer begin: its
        `not_after`, and never more than `call_timeout` after it was accepted."""
        left = (request.not_after - utc_now()).total_seconds()
        return time.monotonic() + max(0.0, min(left, self._call_timeout))

    def _refusal(self, uuid: str, action: str, unknown_vm: bool) -> tuple[str, str] | None:
        """Why a request cannot be taken now (code, message), or None; takes a job slot."""
        if self._stopping.is_set():
            return "agent_stopping", "the agent is stopping"
        if unknown_vm:
            if self._inventory.synced:
                return "vm_not_found", f"no VM with uuid {uuid} on host {self.host}"
            return "libvirt_unavailable", "the agent has not listed its VMs from libvirt yet"
        if not self._hv.connected:
            return "libvirt_unavailable", "the agent is not connected to libvirt"
        if action == "shutdown":
            return self._inventory.admit_shutdown(uuid, self._max_shutdowns)
        with self._lock:
            if self._pending >= self._max_pending:
                return "busy", "too many commands in progress; retry later"
            self._pending += 1
        return None

    def _room(self) -> bool:
        with self._lock:
            return self._room_locked()

    def _room_locked(self) -> bool:
        """Whether one more id can be remembered, after forgetting those that aged out."""
        if len(self._seen) < self._history:
            return True
        now = time.monotonic()
        for key in [k for k, e in self._seen.items() if e.reply.is_final and e.keep_until < now]:
            del self._seen[key]
        return len(self._seen) < self._history

    def _remember(self, request: CommandRequest, reply: CommandReply) -> None:
        """Caches the id's latest reply; a new id only while there is room (see `_room`)."""
        left = (request.not_after - utc_now()).total_seconds()
        keep_until = time.monotonic() + max(0.0, left) + self._remember_after
        with self._lock:
            entry = self._seen.get(request.id)
            if entry is not None:
                entry.reply = reply
            elif self._room_locked():
                self._seen[request.id] = _Entry(reply, keep_until)

    # -- execution (command worker threads) ------------------------------------------------
    def _answer_on_return(self, job: _Job, future: Future[None]) -> None:
        """On the call worker, right after the first call of a quick command returned: its
        final reply, decided here when nothing else has decided the end (`ticket.close`).
        The job thread, woken after this (`settled`), reaches the same reply from the same
        facts, and `_finish` sends only the first of the two."""
        try:
            if future.cancelled():
                return
            exc = future.exception()
            if exc is not None and not isinstance(exc, AgentError):
                return  # a bug: the job thread reports it as `internal`
            if not job.ticket.close():
                return  # a deadline or the agent's stop ended it: that path answers
            if isinstance(exc, AgentError):
                reply: CommandReply | None = self._error_reply(job.request, job.ticket, exc)
            else:
                reply = self._first_reply(job.request, job.progress)
            if reply is not None:
                self._finish(job, reply)
        except Exception:
            logger.exception("command %s: reply not sent on return", job.request.id)
        finally:
            job.settled.set()

    def _run_job(self, job: _Job) -> None:
        request, ticket = job.request, job.ticket
        try:
            reply = self._execute(job)
        except Exception as exc:
            ticket.close()
            logger.exception("command %s crashed", request.id)
            reply = self._final(
                request, "failed", error=ErrorInfo(code="internal", message=str(exc))
            )
        finally:
            if request.action == "shutdown":
                self._inventory.release_shutdown(request.vm)
            else:
                with self._lock:
                    self._pending -= 1
        if not self._finish(job, reply) and self._stopping.is_set():
            logger.info("command %s: its final reply went out at agent stop", request.id)

    def _finish(self, job: _Job, reply: CommandReply) -> bool:
        """Sends a job's final reply unless another path already did (True when this one did)."""
        request = job.request
        with self._lock:
            if self._open.get(request.id) is not job:
                return False
            del self._open[request.id]
            self._closed.notify_all()
        if job.send is not None:
            self._remember(request, reply)
        # On a job's thread an exception would vanish into its Future: say so here.
        try:
            if job.send is not None:
                job.send(reply)
        except Exception:
            logger.exception("command %s: final reply not sent", request.id)
        logger.info(  # after the reply: the log line is not on its way
            "command %s %s %s by %s: %s",
            request.id,
            request.action,
            request.vm,
            request.by,
            reply.status,
        )
        try:
            self._on_outcome(request, reply)
        except Exception:
            logger.exception("command %s: outcome not published", request.id)
        return True

    def _final(
        self,
        request: CommandRequest,
        status: ReplyStatus,
        *,
        state: VmStateName | None = None,
        changed: bool | None = None,
        escalated: bool | None = None,
        error: ErrorInfo | None = None,
    ) -> CommandReply:
        vm = self._inventory.get(request.vm)
        return CommandReply(
            id=request.id,
            host=self.host,
            status=status,
            action=request.action,
            vm=request.vm,
            name=vm.name if vm else None,
            state=state or (vm.state if vm else None),
            changed=changed,
            escalated=escalated,
            error=error,
        )

    def _fresh(self, uuid: str, timeout: float | None = None) -> VmStateName:
        """Reads the VM's state from libvirt now, one RPC: the reply carries the true state.
        Publishing it is the event worker's job (lifecycle events, and the tick for misses).
        Only shutdown waits use it, on their own workers (`_polls`)."""
        limit = self._call_timeout if timeout is None else max(0.1, timeout)
        state, _reason = self._polls.run(lambda: self._hv.domain_state(uuid), limit)
        return self._inventory.state_name(uuid, state)

    def _guard(self, ticket: Ticket, action: str, uuid: str, by: float | None = None) -> Guard:
        """The check made on the calling thread just before the action's RPC (see tickets)."""

        @contextlib.contextmanager
        def guard() -> Iterator[None]:
            with ticket.acting(action, by):
                if action == "shutdown":  # shown `shutting_down` from the moment it is asked
                    self._inventory.shutdown_asked(uuid)
                yield

        return guard

    def _attempt(self, request: CommandRequest, ticket: Ticket, progress: _Progress) -> None:
        """On one call worker (no thread hop between the steps): the state before from libvirt
        (never the record, which may lag it), then, when the action applies, the action through
        the ticket's guard. The state after is what the returned call guarantees (`AFTER`)."""
        uuid, action = request.vm, request.action
        state, _reason = self._hv.domain_state(uuid)
        before = progress.before = self._inventory.state_name(uuid, state)
        if before in TARGET.get(action, ()) or before not in ALLOWED_FROM[action]:
            return
        self._hv.perform(uuid, action, guard=self._guard(ticket, action, uuid))
        progress.acted = True
        if action != "shutdown":  # the guest's own pace: the shutdown job waits for it
            progress.after = AFTER.get(action, before)

    def _await(self, future: Future[None], ticket: Ticket, deadline: float, since: int) -> None:
        """Waits for a call worker's job that may begin an action (the ticket's action number
        `since`). At `deadline`, with no action begun, the ticket turns final and NotBegun
        says so: the action can no longer begin. An action that began has until
        `call_timeout` after it began to answer; after that OutcomeUnknown (ticket final)."""
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
            return
        except FutureTimeout:
            pass
        except CancelledError:  # the agent stopped and cleared the call queue: it never ran
            ticket.expire(since)
            raise NotBegun("the agent stopped before the action began: nothing was sent") from None
        # Final with nothing begun since `since`: the agent is stopping and has answered it.
        if ticket.expire(since) or len(ticket.begun) <= since:
            if not future.cancel():  # running: say when libvirt lets go of it
                future.add_done_callback(partial(_late_call_ended, ticket.id, "no action sent"))
            raise NotBegun("libvirt did not answer before the command's deadline: nothing was sent")
        action, began = ticket.begun[since]
        try:
            future.result(timeout=max(0.0, began + self._call_timeout - time.monotonic()))
            return
        except FutureTimeout:
            pass
        ticket.close()
        if ticket.returned[since]:
            return  # the action returned; only its worker's last steps are late
        sent = f"{action} was sent before the deadline (reported outcome_unknown)"
        future.add_done_callback(partial(_late_call_ended, ticket.id, sent))
        raise OutcomeUnknown(
            f"libvirt was asked to {action} and has not answered within "
            f"{self._call_timeout:.0f}s: it may still take effect"
        )

    def _first_reply(self, request: CommandRequest, progress: _Progress) -> CommandReply | None:
        """The final reply once the first call returned; None for a shutdown that was sent
        (its end comes from the guest)."""
        action, before = request.action, progress.before
        assert before is not None
        if before in TARGET.get(action, ()):
            return self._final(request, "succeeded", state=before, changed=False)
        if before not in ALLOWED_FROM[action]:
            return self._final(
                request,
                "failed",
                state=before,
                error=ErrorInfo(
                    code="invalid_state", message=f"cannot {action} a VM that is {before}"
                ),
            )
        if action == "shutdown":
            return None
        return self._final(request, "succeeded", state=progress.after, changed=True)

    def _error_reply(
        self, request: CommandRequest, ticket: Ticket, exc: AgentError
    ) -> CommandReply:
        unknown = _cut_off(ticket, exc)
        if unknown is not None:
            exc = unknown
        if isinstance(exc, NotBegun | OutcomeUnknown | CallTimeout):
            return self._final(
                request, "timed_out", error=ErrorInfo(code=exc.code, message=str(exc))
            )
        return self._final(request, "failed", error=ErrorInfo(code=exc.code, message=str(exc)))

    def _execute(self, job: _Job) -> CommandReply:
        request, ticket = job.request, job.ticket
        assert job.first is not None
        try:
            # Woken after the call's worker has answered, not beside it (the future's own
            # waiters wake first): the reply does not wait for this thread to get a CPU.
            job.settled.wait(max(0.0, ticket.begin_by - time.monotonic()))
            self._await(job.first, ticket, ticket.begin_by, 0)
            reply = self._first_reply(request, job.progress)
            return reply if reply is not None else self._shutdown(request, ticket)
        except AgentError as exc:
            return self._error_reply(request, ticket, exc)
        finally:
            ticket.close()
            if request.action == "shutdown" and ticket.anything_begun:
                self._inventory.shutdown_settled(request.vm)
                self._on_change(request.vm)

    def _shutdown(self, request: CommandRequest, ticket: Ticket) -> CommandReply:
        """`virDomainShutdown` only asks the guest: it returns once the request is sent, and the
        STOPPED event says it is done. The VM shows `shutting_down` until it stops or
        `timeout_s` after the request was sent; then `force_after` escalates to destroy, which
        may begin up to `escalate_grace` after that and never later."""
        uuid = request.vm
        timeout = request.params.timeout_s
        _, asked_at = ticket.begun[0]
        stop_by = asked_at + timeout
        self._on_change(uuid)
        stopped = self._wait_state(uuid, ("stopped", "crashed"), stop_by)
        escalated: bool | None = False
        error: ErrorInfo | None = None
        if not stopped and self._stopping.is_set():
            # No new action while the agent stops: the guest keeps its shutdown request.
            return self._final(
                request,
                "timed_out",
                escalated=False,
                error=ErrorInfo(
                    code="agent_stopping",
                    message="the agent stopped while the guest was shutting down: the shutdown "
                    "was sent, and it was not forced off",
                ),
            )
        if not stopped and request.params.force_after:
            escalated, stopped, error = self._escalate(uuid, ticket, timeout, stop_by)
        try:
            # A short read: a libvirtd that stopped answering must not hold the reply long.
            state: VmStateName | None = self._fresh(uuid, self._escalate_grace)
        except AgentError:
            state = None  # the reply then carries the recorded state
        if error is None and (stopped or escalated):
            return self._final(request, "succeeded", state=state, changed=True, escalated=escalated)
        return self._final(
            request,
            "timed_out",
            state=state,
            escalated=escalated,
            error=error
            or ErrorInfo(
                code="shutdown_timeout", message=f"the guest did not stop within {timeout:.0f}s"
            ),
        )

    def _escalate(
        self, uuid: str, ticket: Ticket, timeout: float, stop_by: float
    ) -> tuple[bool, bool, ErrorInfo | None]:
        """A shutdown's `force_after`: destroys the guest that did not stop in time. The
        destroy may begin up to `escalate_grace` after `stop_by` and never later. Returns
        (escalated, stopped, error)."""
        logger.warning("shutdown of %s took over %.0fs: destroying it", uuid, timeout)
        since = len(ticket.begun)
        guard = self._guard(ticket, "destroy", uuid, stop_by + self._escalate_grace)
        future = self._calls.submit(lambda: self._hv.perform(uuid, "destroy", guard=guard))
        try:
            self._await(future, ticket, stop_by + self._escalate_grace, since)
            return True, False, None
        except NotBegun:
            return (
                False,
                False,
                ErrorInfo(
                    code="shutdown_timeout",
                    message=f"the guest did not stop within {timeout:.0f}s and libvirt did not "
                    "answer in time to force it off: it was not forced off",
                ),
            )
        except OutcomeUnknown as exc:
            return True, False, ErrorInfo(code=exc.code, message=str(exc))
        except AgentError as exc:
            unknown = _cut_off(ticket, exc)
            if unknown is not None and ticket.cut_off == "destroy":
                return True, False, ErrorInfo(code=unknown.code, message=str(unknown))
            if exc.code == "invalid_state" and self._stopped_now(uuid):
                # The guest stopped between the end of the wait and the destroy: done.
                logger.info("shutdown of %s: the guest stopped just before the destroy", uuid)
                return False, True, None
            raise

    def _stopped_now(self, uuid: str) -> bool:
        try:
            return self._fresh(uuid, self._escalate_grace) in ("stopped", "crashed")
        except AgentError:
            return False

    def _wait_state(self, uuid: str, states: tuple[VmStateName, ...], until: float) -> bool:
        """Lifecycle events update the inventory; a poll each second covers a missed event."""
        while True:
            left = until - time.monotonic()
            if left <= 0 or self._stopping.is_set():
                return False
            if self._inventory.wait_for(
                uuid, lambda s: s is not None and s.state in states, min(1.0, left)
            ):
                return True
            poll = self._polls.submit(lambda: self._hv.domain_state(uuid))
            while True:  # in slices: an agent stop ends the wait even while a poll hangs
                try:
                    state, _reason = poll.result(timeout=0.25)
                except FutureTimeout:
                    if self._stopping.is_set() or time.monotonic() >= until:
                        poll.cancel()
                        return False
                    continue
                except AgentError:
                    break
                if self._inventory.state_name(uuid, state) in states:
                    return True
                break
