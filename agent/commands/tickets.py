"""One ticket per command id: its deadline and whether its final reply is out (SPEC §3).

Every libvirt *action* of a command (the action itself, a shutdown's escalation to destroy)
begins through `Ticket.acting`, on the thread that issues it, immediately before the call: a
check of the deadline and of `final` under the ticket's lock. The paths that end a command
(`expire` at the deadline, `close` with a result) set `final` under the same lock. So either
an action began before the command's end was decided, and the reply then says what libvirt did
(or that it was asked and has not answered), or the action never begins: a command answered
`timed_out`, `failed` or `rejected` is never carried out later, whichever thread, queue,
connection or cached handle the call would have gone through.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from agent.errors import AgentError

logger = logging.getLogger(__name__)


class NotBegun(AgentError):
    """The action was not begun: the command's deadline passed or its final reply is out."""

    code = "timeout"


class Ticket:
    """Thread-safe; `begin_by` is a `time.monotonic()` instant."""

    def __init__(self, request_id: str, begin_by: float) -> None:
        self.id = request_id
        self.begin_by = begin_by
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
            if self._final or time.monotonic() > limit:
                why = "its final reply is out" if self._final else "its deadline passed"
                logger.warning("command %s: %s not sent: %s", self.id, action, why)
                raise NotBegun(f"command {self.id}: {action} not sent: {why}")
            self._running += 1
            self.begun.append((action, time.monotonic()))
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
        ever will (the ticket is final); False when one did (its outcome decides the reply)."""
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
