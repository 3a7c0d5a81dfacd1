"""The libvirt call pool at the agent's stop: a call still waiting for a worker ends with the
agent's own `PoolClosed`, which every caller handles, never a bare CancelledError that the
event worker would log as a crash (threads, so not the unit tier)."""

from __future__ import annotations

import threading

import pytest

from agent.errors import AgentError, PoolClosed
from agent.hypervisor.callpool import CallPool

pytestmark = pytest.mark.service


def test_a_call_queued_at_shutdown_ends_with_pool_closed() -> None:
    pool = CallPool(1)
    release = threading.Event()
    busy = pool.submit(lambda: release.wait(10))  # the only worker is taken
    outcome: list[BaseException | str] = []

    def queued() -> None:
        try:
            outcome.append(pool.run(lambda: "ran", timeout=10))
        except BaseException as exc:  # what a caller would see
            outcome.append(exc)

    waiter = threading.Thread(target=queued)
    waiter.start()
    while not outcome and pool._pool._queue.qsize() == 0:  # the call waits for the worker
        threading.Event().wait(0.01)
    pool.shutdown()
    waiter.join(5)
    release.set()
    busy.result(5)
    assert len(outcome) == 1 and isinstance(outcome[0], PoolClosed), outcome
    assert isinstance(outcome[0], AgentError)
