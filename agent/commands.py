"""Runs command requests: once per id, bounded workers, libvirt calls with deadlines, escalation.

Flow (SPEC §3): a request that passes validation is answered `accepted`, then exactly one final
reply: `succeeded` (with `changed:false` when the VM already was as asked), `failed`,
`rejected` or `timed_out`. Every final outcome is also published on `events` (the audit trail).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from agent.callpool import CallPool
from agent.errors import AgentError, CallTimeout
from agent.hypervisor import Hypervisor
from agent.inventory import Inventory
from agent.requests import Rejection
from agent.transitions import ALLOWED_FROM, TARGET
from shared.messages import (
    CommandReply,
    CommandRequest,
    ErrorInfo,
    ReplyStatus,
    VmStateName,
)

logger = logging.getLogger(__name__)

Reply = Callable[[CommandReply], None]


@dataclass
class _Entry:
    reply: CommandReply
    send: Reply | None


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
    ) -> None:
        self.host = host
        self._hv = hypervisor
        self._inventory = inventory
        self._on_outcome = on_outcome
        self._on_change = on_change
        self._calls = CallPool(workers)
        self._jobs = ThreadPoolExecutor(max_workers=workers * 2, thread_name_prefix="command")
        self._max_pending = workers * 8
        self._pending = 0
        # A shutdown may wait minutes for its guest: it waits on a pool of its own, one per VM,
        # so quick commands (destroy above all) are never queued behind it.
        self._waits = ThreadPoolExecutor(max_workers=64, thread_name_prefix="shutdown")
        self._shutting_down: set[str] = set()
        self._call_timeout = call_timeout
        self._seen: OrderedDict[str, _Entry] = OrderedDict()
        self._history = history
        self._lock = threading.Lock()

    def shutdown(self) -> None:
        self._jobs.shutdown(wait=False, cancel_futures=True)
        self._waits.shutdown(wait=False, cancel_futures=True)
        self._calls.shutdown()

    # -- intake -----------------------------------------------------------------------------
    def reject(
        self, rejection: Rejection, send: Reply | None, request: CommandRequest | None = None
    ) -> None:
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
        if rejection.id is not None and rejection.code not in ("bad_request", "too_large"):
            self._remember(rejection.id, reply, send)
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
        self._remember(request.id, accepted, send)
        if send is not None:
            send(accepted)
        pool = self._waits if request.action == "shutdown" else self._jobs
        pool.submit(self._run_job, request, send)

    def _refusal(self, uuid: str, action: str, unknown_vm: bool) -> tuple[str, str] | None:
        """Why a request cannot be taken now (code, message), or None; takes a job slot."""
        if unknown_vm:
            if self._inventory.synced:
                return "vm_not_found", f"no VM with uuid {uuid} on host {self.host}"
            return "libvirt_unavailable", "the agent has not listed its VMs from libvirt yet"
        if not self._hv.connected:
            return "libvirt_unavailable", "the agent is not connected to libvirt"
        with self._lock:
            if action == "shutdown":
                if uuid in self._shutting_down:
                    return "in_progress", "a shutdown of this VM is already in progress"
                self._shutting_down.add(uuid)
                return None
            if self._pending >= self._max_pending:
                return "busy", "too many commands in progress; retry later"
            self._pending += 1
        return None

    def _remember(self, request_id: str, reply: CommandReply, send: Reply | None) -> None:
        with self._lock:
            self._seen[request_id] = _Entry(reply, send)
            self._seen.move_to_end(request_id)
            while len(self._seen) > self._history:
                self._seen.popitem(last=False)

    # -- execution (command worker threads) ------------------------------------------------
    def _run_job(self, request: CommandRequest, send: Reply | None) -> None:
        try:
            reply = self._execute(request)
        except Exception as exc:
            logger.exception("command %s crashed", request.id)
            reply = self._final(
                request, "failed", error=ErrorInfo(code="internal", message=str(exc))
            )
        finally:
            with self._lock:
                if request.action == "shutdown":
                    self._shutting_down.discard(request.vm)
                else:
                    self._pending -= 1
        self._remember(request.id, reply, send)
        logger.info(
            "command %s %s %s by %s: %s",
            request.id,
            request.action,
            request.vm,
            request.by,
            reply.status,
        )
        if send is not None:
            send(reply)
        self._on_outcome(request, reply)

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

    def _fresh(self, uuid: str) -> VmStateName:
        """Reads the VM's state from libvirt now, one RPC: the reply carries the true state.
        Publishing it is the event worker's job (lifecycle events, and the tick for misses)."""
        state, _reason = self._calls.run(lambda: self._hv.domain_state(uuid), self._call_timeout)
        return self._inventory.state_name(uuid, state)

    def _attempt(
        self, request: CommandRequest, abandoned: threading.Event
    ) -> tuple[VmStateName, VmStateName | None]:
        """On one call worker (no thread hop between the steps): the state before, then, when
        the action applies, the action and the state after (None when nothing was done).

        The read comes first on purpose: a frozen libvirtd hangs it, not the action, and a
        read that returns after the job gave up (`abandoned`) sends nothing, so a command
        reported `timed_out` is never carried out later behind the user's back."""
        uuid, action = request.vm, request.action

        def read() -> VmStateName:
            return self._inventory.state_name(uuid, self._hv.domain_state(uuid)[0])

        before = read()
        if before in TARGET.get(action, ()) or before not in ALLOWED_FROM[action]:
            return before, None
        if action == "shutdown":  # waits for the guest: done by the job, not a call worker
            return before, None
        if abandoned.is_set():
            raise CallTimeout("libvirt answered after the deadline: the action was not sent")
        self._hv.perform(uuid, action)
        return before, read()

    def _execute(self, request: CommandRequest) -> CommandReply:
        action = request.action
        try:
            abandoned = threading.Event()
            try:
                before, after = self._calls.run(
                    lambda: self._attempt(request, abandoned), self._call_timeout
                )
            except CallTimeout:
                abandoned.set()
                raise
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
                return self._shutdown(request)
            return self._final(request, "succeeded", state=after, changed=True)
        except CallTimeout as exc:
            return self._final(
                request, "timed_out", error=ErrorInfo(code=exc.code, message=str(exc))
            )
        except AgentError as exc:
            return self._final(request, "failed", error=ErrorInfo(code=exc.code, message=str(exc)))

    def _shutdown(self, request: CommandRequest) -> CommandReply:
        """`virDomainShutdown` only asks the guest (PITFALLS 6): the VM shows `shutting_down`
        until it stops or the timeout; then `force_after` escalates to destroy."""
        uuid = request.vm
        timeout = request.params.timeout_s
        stopped = escalated = False
        self._inventory.mark_shutdown(uuid, True)
        try:
            self._calls.run(lambda: self._hv.perform(uuid, "shutdown"), self._call_timeout)
            self._on_change(uuid)
            stopped = self._wait_state(uuid, ("stopped", "crashed"), timeout)
            if not stopped and request.params.force_after:
                logger.warning("shutdown of %s took over %.0fs: destroying it", uuid, timeout)
                self._calls.run(lambda: self._hv.perform(uuid, "destroy"), self._call_timeout)
                escalated = True
        finally:
            self._inventory.mark_shutdown(uuid, False)
            self._on_change(uuid)
        state = self._fresh(uuid)
        if stopped or escalated:
            return self._final(request, "succeeded", state=state, changed=True, escalated=escalated)
        return self._final(
            request,
            "timed_out",
            state=state,
            escalated=False,
            error=ErrorInfo(
                code="shutdown_timeout", message=f"the guest did not stop within {timeout:.0f}s"
            ),
        )

    def _wait_state(self, uuid: str, states: tuple[VmStateName, ...], timeout: float) -> bool:
        """Lifecycle events update the inventory; a poll each second covers a missed event."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._inventory.wait_for(
                uuid, lambda s: s is not None and s.state in states, min(1.0, left)
            ):
                return True
            try:
                fresh = self._fresh(uuid)
            except AgentError:
                continue
            if fresh in states:
                return True
