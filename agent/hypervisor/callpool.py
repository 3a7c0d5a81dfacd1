"""Bounded worker threads for libvirt calls, each with a deadline (a stuck QEMU monitor can hang
one libvirt call for minutes)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from agent.errors import CallTimeout, PoolClosed

T = TypeVar("T")


class DaemonPool:
    """A ThreadPoolExecutor's submit/shutdown on daemon threads that nothing joins at exit.

    `concurrent.futures` joins its workers when the interpreter exits, so one worker stuck in
    a call to a frozen libvirtd (or a command waiting out its deadline) would hold a stopping
    agent for as long: SIGTERM must end the process within seconds whatever libvirt does.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._max = workers
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise PoolClosed(f"{self._name} pool is shut down")
            self._queue.put((future, fn))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # delivered to whoever waits on the future
                    future.set_exception(exc)
            del item, future, fn  # a finished call's result is not kept alive while idle
            self._idle.release()

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()


class CallPool:
    """Bounded threads for libvirt calls; a call past its deadline is abandoned, not waited on."""

    def __init__(self, workers: int) -> None:
        self._pool = DaemonPool(workers, "libvirt-call")

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
        except CancelledError as exc:
            # The agent stopped while the call waited for a worker: an expected end, which
            # callers handle with the other AgentErrors, not a crash to log.
            raise PoolClosed("the call pool shut down before the call ran") from exc

    def shutdown(self, wait: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
