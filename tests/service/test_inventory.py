"""The agent's VM inventory: `seq` ordering, change detection, full listings, the shutdown steps
and waiters that need no other thread (unit); waiters woken from another thread (service)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from agent import inventory
from agent.inventory import Inventory, next_seq, to_vm_state
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


# -- unit (no I/O): seq, changes, listings ---------------------------------------------------------


UB = "b0000000-0000-4000-8000-000000000002"


@pytest.mark.unit
def test_next_seq_follows_the_clock() -> None:
    assert next_seq(None, 1_000) == 1_000
    assert next_seq(10, 1_000) == 1_000


@pytest.mark.unit
def test_next_seq_beats_a_previous_seq_in_the_future() -> None:
    # A seq from an earlier run (or a clock that stepped back) still gets exceeded by one.
    assert next_seq(5_000, 1_000) == 5_001
    assert next_seq(1_000, 1_000) == 1_001


@pytest.mark.unit
def test_to_vm_state() -> None:
    s = to_vm_state("kvm1", info(state=5, reason=2, autostart=False), seq=7)
    assert (s.host, s.uuid, s.name) == ("kvm1", UA, "web")
    assert (s.state, s.reason, s.is_active) == ("stopped", "destroyed", False)
    assert (s.vcpus, s.memory_mb, s.max_memory_mb) == (2, 2048, 4096)
    assert (s.autostart, s.persistent, s.seq) == (False, True, 7)
    paused = to_vm_state("kvm1", info(state=3, reason=1), seq=8)
    assert (paused.state, paused.reason, paused.is_active) == ("paused", "user", True)


@pytest.mark.unit
def test_update_reports_only_changes_and_seq_grows() -> None:
    inv = Inventory("kvm1")
    first = inv.update(info())
    assert first is not None
    assert first.state == "running"
    assert inv.update(info()) is None  # nothing changed: nothing to publish
    second = inv.update(info(state=3, reason=1))
    assert second is not None
    assert second.state == "paused"
    assert second.seq > first.seq
    third = inv.update(info(state=3, reason=1), force=True)
    assert third is not None
    assert third.seq > second.seq
    assert inv.get(UA) == third


@pytest.mark.unit
def test_seq_grows_on_fast_successive_changes() -> None:
    inv = Inventory("kvm1")
    seqs = []
    for i in range(50):
        s = inv.update(info(name=f"web{i}"))
        assert s is not None
        seqs.append(s.seq)
    assert seqs == sorted(set(seqs))


@pytest.mark.unit
def test_seq_is_per_vm(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that stands still: each change of a VM then takes its own previous seq + 1, so a
    # seq shared between VMs would show in the numbers.
    monkeypatch.setattr(inventory, "time", SimpleNamespace(time_ns=lambda: 1_000_000))
    inv = Inventory("kvm1")
    a = inv.update(info(UA))
    b = inv.update(info(UB, name="db"))
    assert a is not None and b is not None
    assert inv.update(info(UA)) is None
    assert inv.get(UA) == a
    assert (a.seq, b.seq) == (1_000, 1_000)  # B's first seq owes nothing to A's
    for n in range(3):
        changed = inv.update(info(UA, name=f"web{n}"))
        assert changed is not None and changed.seq == 1_001 + n
    b2 = inv.update(info(UB, name="db2"))
    assert b2 is not None and b2.seq == 1_001  # nor its next one to A's three changes


@pytest.mark.unit
def test_rename_is_a_change() -> None:
    inv = Inventory("kvm1")
    inv.update(info())
    renamed = inv.update(info(name="web-renamed"))
    assert renamed is not None
    assert renamed.name == "web-renamed"


@pytest.mark.unit
def test_replace_all_reports_vanished_vms_and_syncs() -> None:
    inv = Inventory("kvm1")
    inv.update(info(UA))
    inv.update(info(UB, name="db"))
    assert not inv.synced
    states, gone = inv.replace_all([info(UA)])
    assert [s.uuid for s in states] == [UA]  # republished even though unchanged
    assert [s.uuid for s in gone] == [UB]
    assert inv.synced
    assert inv.uuids() == {UA}
    assert inv.get(UB) is None


@pytest.mark.unit
def test_replace_all_adds_new_vms() -> None:
    inv = Inventory("kvm1")
    states, gone = inv.replace_all([info(UA), info(UB, name="db")])
    assert {s.uuid for s in states} == {UA, UB}
    assert gone == []
    assert {s.uuid for s in inv.all()} == {UA, UB}


@pytest.mark.unit
def test_remove() -> None:
    inv = Inventory("kvm1")
    inv.update(info())
    removed = inv.remove(UA)
    assert removed is not None
    assert removed.uuid == UA
    assert inv.remove(UA) is None
    assert inv.all() == []


@pytest.mark.unit
def test_wait_for_times_out() -> None:
    inv = Inventory("kvm1")
    inv.update(info())
    started = time.monotonic()
    assert not inv.wait_for(UA, lambda s: s is not None and s.state == "stopped", timeout=0.05)
    assert time.monotonic() - started >= 0.04


@pytest.mark.unit
def test_wait_for_returns_at_once_when_already_true() -> None:
    inv = Inventory("kvm1")
    inv.update(info())
    assert inv.wait_for(UA, lambda s: s is not None and s.state == "running", timeout=0)


@pytest.mark.unit
def test_a_shutdown_holds_its_vm_and_shows_shutting_down_only_while_the_guest_is_asked() -> None:
    inv = Inventory("kvm1")
    inv.update(info())
    assert inv.admit_shutdown(UA, limit=1) is None
    assert inv.state_name(UA, 1) == "running"  # admitted, not yet asked
    assert inv.admit_shutdown(UA, limit=5) == (
        "in_progress",
        "a shutdown of this VM is already in progress",
    )
    assert inv.admit_shutdown(UB, limit=1) == (
        "busy",
        "too many shutdowns in progress; retry later",
    )
    inv.shutdown_asked(UA)
    assert inv.state_name(UA, 1) == "shutting_down"
    published = inv.update(info(), force=True)
    assert published is not None
    assert (published.state, published.reason) == ("shutting_down", "shutdown requested")
    assert inv.state_name(UA, 5) == "stopped"  # a stopped guest is shown stopped
    inv.shutdown_settled(UA)
    assert inv.state_name(UA, 1) == "running"
    assert inv.admit_shutdown(UA, limit=5) is not None  # still held until the job ends
    inv.release_shutdown(UA)
    assert inv.admit_shutdown(UA, limit=1) is None


@pytest.mark.unit
def test_asking_a_guest_without_an_admitted_shutdown_changes_nothing() -> None:
    inv = Inventory("kvm1")
    inv.shutdown_asked(UA)
    assert inv.state_name(UA, 1) == "running"
