"""Fake time for deadline code: a clock the test moves, and worker pools that run on its thread.

With no other thread, nothing can happen while the code waits, so `FakeClock` lets a wait on
something not ready jump time to the wait's timeout at once (as trio's MockClock autojumps when
every task is blocked): a 30 s deadline is reached in microseconds, and the test reads when it
was reached from `elapsed`. `ManualPool` holds each submitted call until the test starts
(`start`: libvirt has it) and runs (`run`: libvirt answered) it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta
from typing import Any, TypeVar

from agent.clock import Clock
from agent.errors import PoolClosed
from shared.messages import utc_now

T = TypeVar("T")


class FakeClock(Clock):
    """Starts at the real wall time (requests are validated against it) and then moves only
    through `advance` and through waits that time out."""

    def __init__(self) -> None:
        self._start = utc_now()
        self.elapsed = 0.0

    def advance(self, seconds: float) -> None:
        self.elapsed += max(0.0, seconds)

    def monotonic(self) -> float:
        return 1000.0 + self.elapsed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.elapsed)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if not event.is_set():
            self.advance(timeout)
        return event.is_set()

    def wait_for(
        self, cond: threading.Condition, predicate: Callable[[], bool], timeout: float
    ) -> bool:
        if not predicate():
            self.advance(timeout)
        return predicate()

    def result(self, future: Future[T], timeout: float) -> T:
        if not future.done():
            self.advance(timeout)
            if not future.done():
                raise FutureTimeout()
        return future.result(timeout=0)


class ManualPool:
    """Each call waits, in order, until the test starts or runs it."""

    def __init__(self) -> None:
        self.queued: list[tuple[Future[Any], Callable[[], Any]]] = []
        self.closed = False

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        if self.closed:
            raise PoolClosed("pool is shut down")
        future: Future[T] = Future()
        self.queued.append((future, fn))
        return future

    def start(self, index: int = 0) -> None:
        """The call is with libvirt now: it can no longer be cancelled, and has not returned."""
        assert self.queued[index][0].set_running_or_notify_cancel()

    def run(self, index: int = 0) -> None:
        """The call runs to its end on the test's thread (unless it was cancelled first)."""
        future, fn = self.queued.pop(index)
        if not future.running() and not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    def shutdown(self, wait: bool = False) -> None:
        self.closed = True
        for future, _fn in self.queued:
            future.cancel()


class InlinePool(ManualPool):
    """Runs each call as it is submitted, on the submitting thread."""

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future = super().submit(fn)
        self.run(len(self.queued) - 1)
        return future
