"""The clocks that command deadlines read, and the bounded waits they make, in one object.

Deadline code takes a `Clock` (default `SYSTEM_CLOCK`) instead of calling `time` and waiting on
events itself, so a test can hand it a clock whose time it moves (tests/support/clock.py) and
check a deadline in milliseconds, with no thread and no real wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from typing import TypeVar

from shared.messages import utc_now

T = TypeVar("T")


class Clock:
    """The real clocks: `monotonic` for the agent's own deadlines, `now` (UTC wall time) for the
    instants a request carries (`not_after`). Each wait returns at its timeout at the latest."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return utc_now()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """`event.wait(timeout)`: True once the event is set."""
        return event.wait(timeout)

    def wait_for(
        self, cond: threading.Condition, predicate: Callable[[], bool], timeout: float
    ) -> bool:
        """`cond.wait_for(predicate, timeout)`; the caller holds `cond`."""
        return cond.wait_for(predicate, timeout)

    def result(self, future: Future[T], timeout: float) -> T:
        """`future.result(timeout)`: raises `concurrent.futures.TimeoutError` at the timeout."""
        return future.result(timeout=timeout)


SYSTEM_CLOCK = Clock()
