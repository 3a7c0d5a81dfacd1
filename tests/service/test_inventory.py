"""The agent's VM inventory: `seq` ordering, change detection, full listings, waiters."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from agent.hypervisor import DomainInfo
from agent.inventory import Inventory

pytestmark = pytest.mark.service

UA = "a0000000-0000-4000-8000-000000000001"


def info(
    uuid: str = UA, name: str = "web", state: int = 1, reason: int = 1, **kw: Any
) -> DomainInfo:
    base = DomainInfo(
        uuid=uuid,
        name=name,
        state=state,
        reason=reason,
        vcpus=2,
        memory_kib=2048 * 1024,
        max_memory_kib=4096 * 1024,
        autostart=True,
        persistent=True,
    )
    return replace(base, **kw)


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
    timer = threading.Timer(0.05, inv.remove, args=(UA,))
    timer.start()
    try:
        assert inv.wait_for(UA, lambda s: s is None, timeout=5)
    finally:
        timer.join()
