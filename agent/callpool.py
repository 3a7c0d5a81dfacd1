"""Bounded worker threads for libvirt calls, each with a deadline (a stuck QEMU monitor can hang
one libvirt call for minutes)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from agent.errors import CallTimeout

T = TypeVar("T")


class CallPool:
    """Bounded threads for libvirt calls; a call past its deadline is abandoned, not waited on."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="libvirt-call")

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """For a caller that decides itself what a late answer means (a command's deadline)."""
        return self._pool.submit(fn)

    def run(self, fn: Callable[[], T], timeout: float) -> T:
        future: Future[T] = self._pool.submit(fn)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout as exc:
            # Still queued behind busy workers: it never runs. Already running: it is abandoned.
            future.cancel()
            raise CallTimeout(f"libvirt did not answer within {timeout:.0f}s") from exc

    def shutdown(self, wait: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
