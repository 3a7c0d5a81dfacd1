"""A shutdown's wait for its guest, and its escalation to destroy (`force_after`, SPEC §3).

`virDomainShutdown` only asks the guest: it returns once the request is sent, and the STOPPED
event says it is done. The VM shows `shutting_down` until it stops or `timeout_s` after the
request was sent; then `force_after` escalates to destroy, which may begin up to
`escalate_grace` after that and never later.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial

from agent.clock import SYSTEM_CLOCK, Clock
from agent.commands.deadlines import CommandDeadline, NotBegun
from agent.commands.outcomes import Outcomes
from agent.commands.settings import ExecutorSettings, Pools
from agent.errors import AgentError, CallTimeout, OutcomeUnknown
from agent.hypervisor import Hypervisor
from agent.inventory import Inventory
from shared.messages import CommandParams, CommandReply, CommandRequest, ErrorInfo, VmStateName

logger = logging.getLogger(__name__)

STOPPED: tuple[VmStateName, ...] = ("stopped", "crashed")
# A wait re-reads the guest's state this often, in case its lifecycle event was missed.
POLL_EVERY_S = 1.0
# A poll's answer is awaited in slices this long: an agent stop ends the wait even while a poll
# hangs on a stuck VM.
POLL_SLICE_S = 0.25


class GuestShutdown:
    """Runs on the shutdown's own job thread once the shutdown request was sent."""

    def __init__(
        self,
        hypervisor: Hypervisor,
        inventory: Inventory,
        outcomes: Outcomes,
        pools: Pools,
        settings: ExecutorSettings,
        stopping: threading.Event,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._hv = hypervisor
        self._inventory = inventory
        self._outcomes = outcomes
        self._pools = pools
        self._settings = settings
        self._stopping = stopping
        self._clock = clock

    def finish(self, request: CommandRequest, deadline: CommandDeadline) -> CommandReply:
        """Waits for the guest to stop, escalates when asked to, and says how it ended."""
        uuid = request.vm
        timeout = request.params.timeout_s
        _, asked_at = deadline.begun[0]
        stop_by = asked_at + timeout
        stopped = self._wait_stopped(uuid, stop_by)
        escalated: bool | None = False
        error: ErrorInfo | None = None
        if not stopped and self._stopping.is_set():
            # No new action while the agent stops: the guest keeps its shutdown request.
            return self._outcomes.final(
                request,
                "timed_out",
                escalated=False,
                error=ErrorInfo(
                    code="agent_stopping",
                    message="the agent stopped while the guest was shutting down: the shutdown "
                    "was sent, and it was not forced off",
                ),
            )
        force = isinstance(request.params, CommandParams) and request.params.force_after
        if not stopped and force:
            escalated, stopped, error = self._escalate(uuid, deadline, timeout, stop_by)
        try:
            # A short read: a libvirtd that stopped answering must not hold the reply long.
            state: VmStateName | None = self._fresh(uuid)
        except AgentError:
            state = None  # the reply then carries the recorded state
        if error is None and (stopped or escalated):
            return self._outcomes.final(
                request, "succeeded", state=state, changed=True, escalated=escalated
            )
        return self._outcomes.final(
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
        self, uuid: str, deadline: CommandDeadline, timeout: float, stop_by: float
    ) -> tuple[bool, bool, ErrorInfo | None]:
        """A shutdown's `force_after`: destroys the guest that did not stop in time. The
        destroy may begin up to `escalate_grace` after `stop_by` and never later. Returns
        (escalated, stopped, error)."""
        logger.warning("shutdown of %s took over %.0fs: destroying it", uuid, timeout)
        since = len(deadline.begun)
        by = stop_by + self._settings.escalate_grace
        guard = partial(deadline.acting, "destroy", by)
        future = self._pools.calls.submit(lambda: self._hv.perform(uuid, "destroy", guard=guard))
        try:
            deadline.await_call(future, by, since, self._settings.call_timeout)
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
            unknown = deadline.cut_off_error(exc)
            if unknown is not None and deadline.cut_off == "destroy":
                return True, False, ErrorInfo(code=unknown.code, message=str(unknown))
            if exc.code == "invalid_state" and self._stopped_now(uuid):
                # The guest stopped between the end of the wait and the destroy: done.
                logger.info("shutdown of %s: the guest stopped just before the destroy", uuid)
                return False, True, None
            raise

    def _fresh(self, uuid: str) -> VmStateName:
        """Reads the VM's state from libvirt now, one RPC bounded by `escalate_grace`, on the
        waits' own workers: the reply carries the true state. Publishing it is the event
        worker's job (lifecycle events, and the tick for misses)."""
        limit = max(0.1, self._settings.escalate_grace)
        future = self._pools.polls.submit(lambda: self._hv.domain_state(uuid))
        try:
            state, _reason = self._clock.result(future, limit)
        except FutureTimeout as exc:
            # Still queued behind busy workers: it never runs. Already running: abandoned.
            future.cancel()
            raise CallTimeout(f"libvirt did not answer within {limit:.0f}s") from exc
        return self._inventory.state_name(uuid, state)

    def _stopped_now(self, uuid: str) -> bool:
        try:
            return self._fresh(uuid) in STOPPED
        except AgentError:
            return False

    def _wait_stopped(self, uuid: str, until: float) -> bool:
        """Lifecycle events update the inventory; a poll each second covers a missed event."""
        clock = self._clock
        while True:
            left = until - clock.monotonic()
            if left <= 0 or self._stopping.is_set():
                return False
            if self._inventory.wait_for(
                uuid, lambda s: s is not None and s.state in STOPPED, min(POLL_EVERY_S, left), clock
            ):
                return True
            poll = self._pools.polls.submit(lambda: self._hv.domain_state(uuid))
            while True:  # in slices: an agent stop ends the wait even while a poll hangs
                try:
                    state, _reason = clock.result(poll, POLL_SLICE_S)
                except FutureTimeout:
                    if self._stopping.is_set() or clock.monotonic() >= until:
                        poll.cancel()
                        return False
                    continue
                except AgentError:
                    break
                if self._inventory.state_name(uuid, state) in STOPPED:
                    return True
                break
