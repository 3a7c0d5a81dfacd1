"""The agent's VM inventory: `seq` ordering, change detection, full listings, waiters."""

from __future__ import annotations

import threading
import time

import pytest

from agent.inventory import Inventory
from shared.messages import VmState
from tests.support.domains import UA, info

pytestmark = pytest.mark.service


def test_wait_for_wakes_on_update_from_another_thread() -> None:
    inv = Inventory("kvm1")
    inv.update(info(state=1))

    def stop_later() -> None:
        time.sleep(0.05)
        inv.update(info(state=5, reason=1))

    worker = threading.Thread(target=stop_later)
    started = time.monotonic()
    worker.start()
    try:
        ok = inv.wait_for(UA, lambda s: s is not None and s.state == "stopped", timeout=5)
    finally:
        worker.join()
    assert ok
    assert time.monotonic() - started < 2


def test_wait_for_wakes_on_removal() -> None:
    inv = Inventory("kvm1")
    inv.update(info())
    # Removed from another thread started at the waiter's first look, under the inventory's
    # lock: the removal can only happen once the waiter sleeps, so only a notify wakes it
    # before the timeout (the predicate holds at the timeout too, so `True` alone proves
    # nothing).
    remover = threading.Thread(target=inv.remove, args=(UA,))
    timeout = 5.0

    def removed(state: VmState | None) -> bool:
        if remover.ident is None:
            remover.start()
        return state is None

    started = time.monotonic()
    try:
        assert inv.wait_for(UA, removed, timeout=timeout)
    finally:
        remover.join()
    assert time.monotonic() - started < timeout, "woken by the timeout, not by the removal"
