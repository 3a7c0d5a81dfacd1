"""Admits command requests and runs each once: bounded workers, one deadline per command.

Flow (SPEC §3): a request that passes validation is answered `accepted`, then exactly one final
reply: `succeeded` (with `changed:false` when the VM already was as asked), `failed`,
`rejected` or `timed_out`. Every final outcome is also published on `events` (the audit trail).
The id cache lives in `replies`, a command's deadline in `deadlines`, its one final reply in
`jobs`, the wait for a guest asked to shut down in `shutdown`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from functools import partial

from agent.clock import SYSTEM_CLOCK, Clock
from agent.commands.deadlines import CommandDeadline
from agent.commands.jobs import Job, OpenJobs, Reply
from agent.commands.outcomes import Outcomes, Progress
from agent.commands.replies import ReplyCache
from agent.commands.requests import Rejection
from agent.commands.settings import STOP_GRACE_S, ExecutorSettings, Pools
from agent.commands.shutdown import GuestShutdown
from agent.commands.snapshots import act, call_timeout, is_snapshot
from agent.commands.transitions import AFTER, ALLOWED_FROM, TARGET
from agent.errors import AgentError
from agent.hypervisor import Hypervisor
from agent.hypervisor.operations import Guard
from agent.inventory import Inventory
from shared.messages import CommandReply, CommandRequest, ErrorInfo

logger = logging.getLogger(__name__)


class CommandExecutor:
    """Accepts requests on the thread that decoded them; runs them in its own workers.

    `on_outcome` publishes every final outcome; `on_change(uuid)` asks for a VM to be re-read,
    `on_snapshots(uuid)` for its snapshots to be (once a snapshot action began).
    `pools` defaults to threads sized by `settings`; a test may hand in its own, and a `clock`
    whose time it moves."""

    def __init__(
        self,
        host: str,
        hypervisor: Hypervisor,
        inventory: Inventory,
        on_outcome: Callable[[CommandRequest | None, CommandReply], None],
        on_change: Callable[[str], None],
        settings: ExecutorSettings | None = None,
        clock: Clock = SYSTEM_CLOCK,
        pools: Pools | None = None,
        on_snapshots: Callable[[str], None] | None = None,
    ) -> None:
        self.host = host
        self.settings = settings = settings or ExecutorSettings()
        self._hv = hypervisor
        self._inventory = inventory
        self._on_outcome = on_outcome
        self._on_change = on_change
        self._on_snapshots = on_snapshots
        self._clock = clock
        self._pools = pools or Pools.threads(settings)
        self._outcomes = Outcomes(host, inventory)
        self._replies = ReplyCache(settings.history, settings.remember_after, clock)
        self._stopping = threading.Event()
        self._guest = GuestShutdown(
            hypervisor, inventory, self._outcomes, self._pools, settings, self._stopping, clock
        )
        self._open = OpenJobs(self._replies, on_outcome, clock)
        self._pending = 0  # admitted commands but shutdowns (the inventory counts those)
        self._lock = threading.Lock()

    def drain(self, grace: float = STOP_GRACE_S) -> None:
        """Before the agent's MQTT connection goes: every accepted command gets its final reply,
        then the workers are let go. One whose action has not begun never will (`timed_out`,
        `agent_stopping`, nothing sent); shutdown waits end now; an action already sent has
        `grace` to be answered, then is reported `outcome_unknown`. New requests are refused
        `agent_stopping`."""
        self._stopping.set()
        for job in self._open.all():
            if job.deadline.expire(0):
                self._open.finish(
                    job,
                    self._outcomes.final(
                        job.request,
                        "timed_out",
                        error=ErrorInfo(
                            code="agent_stopping",
                            message="the agent stopped before the action began: nothing was sent",
                        ),
                    ),
                )
        for job in self._open.wait_until_empty(grace):
            job.deadline.close()
            begun = job.deadline.begun
            action = begun[-1][0] if begun else job.request.action
            self._open.finish(
                job,
                self._outcomes.final(
                    job.request,
                    "timed_out",
                    error=ErrorInfo(
                        code="outcome_unknown",
                        message=f"the agent stopped before libvirt answered its {action}: "
                        "it may still take effect",
                    ),
                ),
            )
        self.close_workers()

    def close_workers(self, wait: bool = False) -> None:
        """Lets the worker pools go; `wait`: until every job and libvirt call already running
        has returned (tests)."""
        self._pools.shutdown(wait=wait)

    # -- admission --------------------------------------------------------------------------
    def reject(
        self, rejection: Rejection, send: Reply | None, request: CommandRequest | None = None
    ) -> None:
        known = self._replies.get(rejection.id) if rejection.id is not None else None
        if known is not None:
            # An id already answered (accepted, running or done): a late redelivery that now
            # reads as expired, a retained copy, a malformed message carrying its
            # CorrelationData. Refusing it would be a second, contradicting reply.
            logger.warning(
                "command %s refused (%s: %s) but already known: re-sending its %s reply",
                rejection.id,
                rejection.code,
                rejection.message,
                known.status,
            )
            if send is not None:
                send(known)
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
            self._replies.remember(request, reply)
        if send is not None:
            send(reply)
        self._on_outcome(request, reply)

    def submit(self, request: CommandRequest, send: Reply | None) -> None:
        """Validates against what the agent knows, replies `accepted`, queues the job."""
        known = self._replies.get(request.id)
        if known is not None:
            # A repeated id (QoS 1 redelivery, a retry): the cached reply, never a second run.
            logger.info("command %s seen before: re-sending its %s reply", request.id, known.status)
            if send is not None:
                send(known)
            return
        vm = self._inventory.get(request.vm)
        if send is not None and not self._replies.has_room():
            # Forgetting a remembered id to make room could run a redelivered copy twice, so
            # the new request waits for ids to age out instead.
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
        deadline = CommandDeadline(request.id, self._begin_by(request), self._clock)
        if send is not None:
            self._replies.remember(request, accepted)
            send(accepted)
        job = Job(request, send, deadline)
        self._open.add(job)
        # The first call starts now, beside the job's thread rather than from it: the job
        # thread only keeps the deadline, and a thread hop less is a shorter round trip.
        job.first = self._start_first(job)
        pool = self._pools.waits if request.action == "shutdown" else self._pools.jobs
        pool.submit(partial(self._run_job, job))

    def _begin_by(self, request: CommandRequest) -> float:
        """The monotonic instant after which the command's action may no longer begin: its
        `not_after`, and never more than `call_timeout` after it was accepted."""
        left = (request.not_after - self._clock.now()).total_seconds()
        return self._clock.monotonic() + max(0.0, min(left, self.settings.call_timeout))

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
            return self._inventory.admit_shutdown(uuid, self.settings.max_shutdowns)
        with self._lock:
            if self._pending >= self.settings.max_pending:
                return "busy", "too many commands in progress; retry later"
            self._pending += 1
        return None

    # -- the first call (call workers) ------------------------------------------------------
    def _start_first(self, job: Job) -> Future[None]:
        """Queues the job's first call. A command that is over once it returns (all but a
        shutdown) is answered by that call's worker as soon as it returns, unless a deadline
        or the agent's stop has decided the command's end first (then that path answers)."""
        try:
            future = self._pools.calls.submit(
                partial(self._attempt, job.request, job.deadline, job.progress)
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

    def _guard(self, deadline: CommandDeadline, action: str, uuid: str) -> Guard:
        """The check made on the calling thread just before the action's RPC (see deadlines)."""

        @contextlib.contextmanager
        def guard() -> Iterator[None]:
            with deadline.acting(action):
                if action == "shutdown":  # shown `shutting_down` from the moment it is asked
                    self._inventory.shutdown_asked(uuid)
                yield

        return guard

    def _attempt(
        self, request: CommandRequest, deadline: CommandDeadline, progress: Progress
    ) -> None:
        """On one call worker (no thread hop between the steps): the state before from libvirt
        (never the record, which may lag it), then, when the action applies, the action through
        the deadline's guard. The state after is what the returned call guarantees (`AFTER`)."""
        uuid, action = request.vm, request.action
        state, _reason = self._hv.domain_state(uuid)
        before = progress.before = self._inventory.state_name(uuid, state)
        if before in TARGET.get(action, ()) or before not in ALLOWED_FROM[action]:
            return
        if is_snapshot(request):
            guard = self._guard(deadline, action, uuid)
            act(self._hv, self._inventory, request, guard, progress, self.settings.max_snapshots)
            return
        self._hv.perform(uuid, action, guard=self._guard(deadline, action, uuid))
        progress.acted = True
        if action != "shutdown":  # the guest's own pace: the shutdown job waits for it
            progress.after = AFTER.get(action, before)

    def _answer_on_return(self, job: Job, future: Future[None]) -> None:
        """On the call worker, right after the first call of a quick command returned: its
        final reply, decided here when nothing else has decided the end (`deadline.close`).
        The job thread, woken after this (`settled`), reaches the same reply from the same
        facts, and `_finish` sends only the first of the two."""
        try:
            if future.cancelled():
                return
            exc = future.exception()
            if exc is not None and not isinstance(exc, AgentError):
                return  # a bug: the job thread reports it as `internal`
            if not job.deadline.close():
                return  # a deadline or the agent's stop ended it: that path answers
            if isinstance(exc, AgentError):
                reply: CommandReply | None = self._outcomes.of_error(job.request, job.deadline, exc)
            else:
                reply = self._outcomes.after_first_call(job.request, job.progress)
            if reply is not None:
                self._open.finish(job, reply)
        except Exception:
            logger.exception("command %s: reply not sent on return", job.request.id)
        finally:
            job.settled.set()

    # -- the job (its own thread: keeps the deadline, sends the final reply) ----------------
    def _run_job(self, job: Job) -> None:
        request, deadline = job.request, job.deadline
        try:
            reply = self._execute(job)
        except Exception as exc:
            deadline.close()
            logger.exception("command %s crashed", request.id)
            reply = self._outcomes.final(
                request, "failed", error=ErrorInfo(code="internal", message=str(exc))
            )
        finally:
            if request.action == "shutdown":
                self._inventory.release_shutdown(request.vm)
            else:
                with self._lock:
                    self._pending -= 1
        if not self._open.finish(job, reply) and self._stopping.is_set():
            logger.info("command %s: its final reply went out at agent stop", request.id)

    def _execute(self, job: Job) -> CommandReply:
        request, deadline = job.request, job.deadline
        assert job.first is not None
        try:
            # Woken after the call's worker has answered, not beside it (the future's own
            # waiters wake first): the reply does not wait for this thread to get a CPU.
            self._clock.wait(job.settled, max(0.0, deadline.begin_by - self._clock.monotonic()))
            limit = call_timeout(request, self.settings.call_timeout)
            deadline.await_call(job.first, deadline.begin_by, 0, limit)
            reply = self._outcomes.after_first_call(request, job.progress)
            if reply is not None:
                return reply
            self._on_change(request.vm)  # the guest was asked: shown `shutting_down`
            return self._guest.finish(request, deadline)
        except AgentError as exc:
            return self._outcomes.of_error(request, deadline, exc)
        finally:
            deadline.close()
            if is_snapshot(request) and deadline.anything_begun:
                self._on_change(request.vm)  # a revert may have changed its state
                if self._on_snapshots is not None:
                    self._on_snapshots(request.vm)
            if request.action == "shutdown" and deadline.anything_begun:
                self._inventory.shutdown_settled(request.vm)
                self._on_change(request.vm)
