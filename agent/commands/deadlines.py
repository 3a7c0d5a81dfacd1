"""One deadline per command id: when its actions may begin, and whether its reply is out (SPEC §3).

Every libvirt *action* of a command (the action itself, a shutdown's escalation to destroy)
begins through `CommandDeadline.acting`, on the thread that issues it, immediately before the
call: a check of the deadline and of `final` under the deadline's lock. The paths that end a
command (`expire` at the deadline, `close` with a result) set `final` under the same lock. So
either an action began before the command's end was decided, and the reply then says what
libvirt did (or that it was asked and has not answered), or the action never begins: a command
answered `timed_out`, `failed` or `rejected` is never carried out later, whichever thread,
queue, connection or cached handle the call would have gone through.

`await_call` is the other side of that race: the thread keeping the deadline waits for the call
and decides, at the deadline, whether the action began.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial

from agent.clock import SYSTEM_CLOCK, Clock
from agent.errors import AgentError, CallTimeout, HypervisorUnavailable, OutcomeUnknown

logger = logging.getLogger(__name__)


class NotBegun(AgentError):
    """The action was not begun: the command's deadline passed or its final reply is out."""

    code = "timeout"


class CommandDeadline:
    """Thread-safe; `begin_by` is an instant of `clock.monotonic()`."""

    def __init__(self, request_id: str, begin_by: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.id = request_id
        self.begin_by = begin_by
        self._clock = clock
        self._lock = threading.Lock()
        self._final = False
        self._running = 0
        # Actions begun, in order, with the monotonic time each began, and whether each one
        # returned (True), failed (False) or is still with libvirt (None).
        self.begun: list[tuple[str, float]] = []
        self.returned: list[bool | None] = []

    @property
    def final(self) -> bool:
        with self._lock:
            return self._final

    @property
    def anything_begun(self) -> bool:
        with self._lock:
            return bool(self.begun)

    @property
    def in_flight(self) -> bool:
        with self._lock:
            return self._running > 0

    @contextlib.contextmanager
    def acting(self, action: str, by: float | None = None) -> Iterator[None]:
        """Wraps the one libvirt call that carries out `action`; raises NotBegun instead of
        entering when the deadline (`by`, default `begin_by`) passed or the reply is out."""
        limit = self.begin_by if by is None else by
        with self._lock:
            if self._final or self._clock.monotonic() > limit:
                why = "its final reply is out" if self._final else "its deadline passed"
                logger.warning("command %s: %s not sent: %s", self.id, action, why)
                raise NotBegun(f"command {self.id}: {action} not sent: {why}")
            self._running += 1
            self.begun.append((action, self._clock.monotonic()))
            index = len(self.returned)
            self.returned.append(None)
        ok = False
        try:
            yield
            ok = True
        finally:
            with self._lock:
                self._running -= 1
                self.returned[index] = ok

    @property
    def cut_off(self) -> str | None:
        """The action that began last when its call ended in an error (its RPC may have
        reached libvirt before the connection failed), else None."""
        with self._lock:
            if self.returned and self.returned[-1] is False:
                return self.begun[-1][0]
            return None

    def expire(self, since: int = 0) -> bool:
        """At a deadline: True when no action numbered `since` or later began, and then none
        ever will (the deadline is final); False when one did (its outcome decides the reply)."""
        with self._lock:
            if self._final or len(self.begun) > since:
                return False
            self._final = True
            return True

    def close(self) -> bool:
        """Marks the final reply as decided; True for the first caller only."""
        with self._lock:
            if self._final:
                return False
            self._final = True
            return True

    def await_call(
        self, future: Future[None], until: float, since: int, call_timeout: float
    ) -> None:
        """Waits for a call worker's job that may begin an action (action number `since`). At
        `until`, with no action begun, the deadline turns final and NotBegun says so: the action
        can no longer begin. An action that began has until `call_timeout` after it began to
        answer; after that OutcomeUnknown (final)."""
        clock = self._clock
        try:
            clock.result(future, max(0.0, until - clock.monotonic()))
            return
        except FutureTimeout:
            pass
        except CancelledError:  # the agent stopped and cleared the call queue: it never ran
            self.expire(since)
            raise NotBegun("the agent stopped before the action began: nothing was sent") from None
        # Final with nothing begun since `since`: the agent is stopping and has answered it.
        if self.expire(since) or len(self.begun) <= since:
            if not future.cancel():  # running: say when libvirt lets go of it
                future.add_done_callback(partial(_late_call_ended, self.id, "no action sent"))
            raise NotBegun("libvirt did not answer before the command's deadline: nothing was sent")
        action, began = self.begun[since]
        try:
            clock.result(future, max(0.0, began + call_timeout - clock.monotonic()))
            return
        except FutureTimeout:
            pass
        self.close()
        if self.returned[since]:
            return  # the action returned; only its worker's last steps are late
        sent = f"{action} was sent before the deadline (reported outcome_unknown)"
        future.add_done_callback(partial(_late_call_ended, self.id, sent))
        raise OutcomeUnknown(
            f"libvirt was asked to {action} and has not answered within "
            f"{call_timeout:.0f}s: it may still take effect"
        )

    def cut_off_error(self, exc: AgentError) -> OutcomeUnknown | None:
        """A transport error (or libvirt's own call timeout) from an action whose RPC was sent:
        libvirt may have carried it out, so this is outcome_unknown, not a failure nor `timeout`
        (which promises that nothing was sent)."""
        action = self.cut_off
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
