"""The SQLite store: a store only built opens nothing and a bad path refuses to start (unit); the
history window, persistence across reopen, events, audit upserts (service)."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.adapters.store import Store, StoreError
from gateway.core.records import AuditEntry
from shared.messages import (
    DiskIO,
    HostMetrics,
    MetricsBatch,
    NetIO,
    VmEvent,
    VmMetrics,
    utc_now,
)

pytestmark = pytest.mark.service

UA = "a0000000-0000-4000-8000-000000000001"


def batch(cpu: float, ts_offset_s: float = 0) -> MetricsBatch:
    ts = utc_now() + timedelta(seconds=ts_offset_s)
    m = VmMetrics(
        host="a",
        uuid=UA,
        name="web",
        state="running",
        cpu_percent=cpu,
        vcpus=2,
        memory_used_mb=512,
        memory_total_mb=1024,
        memory_percent=50,
        ts=ts,
        disk_io=[
            DiskIO(device="vda", read_bytes=1, write_bytes=2, read_bps=10, write_bps=20),
            DiskIO(device="vdb", read_bytes=1, write_bytes=2, read_bps=1),
        ],
        network_io=[NetIO(interface="vnet0", rx_bytes=1, tx_bytes=2, rx_bps=5)],
    )
    return MetricsBatch(host="a", interval_s=1, tick=1, host_metrics=HostMetrics(), vms=[m], ts=ts)


def entry(id_: str, result: str, by: str = "bob") -> AuditEntry:
    now = utc_now()
    return AuditEntry(
        id=id_,
        ts=now,
        by=by,
        host="a",
        vm=UA,
        name="web",
        action="shutdown",
        params={"timeout_s": 60.0},
        result=result,
        error=None,
        updated_at=now,
        finished_at=None,
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(str(tmp_path / "sub" / "gw.db"), history_minutes=1, audit_days=1)
    s.start()
    return s


def test_history_sums_devices_keeps_its_window_and_survives_reopen(
    store: Store, tmp_path: Path
) -> None:
    store.add_metrics(batch(1, ts_offset_s=-120))  # older than the window: pruned
    store.add_metrics(batch(2, ts_offset_s=-30))
    store.add_metrics(batch(3))
    store.stop()  # commits and prunes
    again = Store(str(tmp_path / "sub" / "gw.db"), history_minutes=1, audit_days=1)
    history = again.history("a", UA, minutes=1)
    assert history.resolution == "full" and history.resolution_s is None
    points = history.points
    assert [p.cpu_percent for p in points] == [2, 3]
    assert (points[-1].disk_read_bps, points[-1].disk_write_bps) == (11, 20)
    assert (points[-1].net_rx_bps, points[-1].net_tx_bps) == (5, 0)
    # Whole MiB as the seed sends them, though the column is REAL (files of older versions).
    assert points[-1].memory_used_mb == 512 and type(points[-1].memory_used_mb) is int
    assert again.history("a", "another-uuid", minutes=1).points == []


def test_events_newest_first_with_filters(store: Store) -> None:
    store.add_event(VmEvent(host="a", kind="lifecycle", uuid=UA, name="web", event="started"))
    store.add_event(
        VmEvent(
            host="a",
            kind="command",
            uuid=UA,
            name="web",
            event="succeeded",
            by="bob",
            action="start",
            status="succeeded",
            id="j1",
        )
    )
    store.add_event(VmEvent(host="b", kind="agent", event="libvirt_connected"))
    assert store.flush()
    assert [e.event for e in store.events()] == ["libvirt_connected", "succeeded", "started"]
    assert [e.by for e in store.events(kind="command", vm="web")] == ["bob"]
    assert [e.host for e in store.events(host="b")] == ["b"]
    assert len(store.events(limit=1)) == 1


def test_audit_rewrites_one_entry_per_job(store: Store) -> None:
    store.record(entry("j1", "pending"))
    store.record(entry("j1", "succeeded"))
    store.record(entry("r1", "refused", by="carol"))
    assert store.flush()
    rows = store.audit()
    assert sorted((r.id, r.result, r.by) for r in rows) == [
        ("j1", "succeeded", "bob"),
        ("r1", "refused", "carol"),
    ]
    assert [r.id for r in store.audit(by="carol")] == ["r1"]
    assert [r.id for r in store.audit(vm="web", result="succeeded")] == ["j1"]
    assert store.audit()[0].params == {"timeout_s": 60.0}


def test_writes_never_block_and_audit_is_never_dropped_when_the_writer_is_behind(
    tmp_path: Path,
) -> None:
    s = Store(str(tmp_path / "gw.db"), 1, 1, queue_max=2)  # writer not started yet
    t0 = time.monotonic()
    for i in range(11):  # one tick a minute: each one ends its VM's previous minute
        s.record(entry(f"j{i}", "pending"))
        s.add_metrics(batch(float(i), ts_offset_s=60 * (i - 11)))
    assert time.monotonic() - t0 < 0.5
    # History past the bound is dropped, and counted where /health and /metrics show drops.
    assert s.drops.counts() == {"store_full": 8}
    s.start()
    assert s.flush()
    assert len(s.audit(limit=100)) == 11  # every job's row, whatever the history did
    kept = s.history("a", UA, 60).points
    # The two minutes queued, and the last one, still in memory: the rest was dropped.
    assert [p.cpu_percent for p in kept] == [0, 1, 10]
    s.stop()


def test_a_job_is_on_disk_when_record_now_returns_and_old_files_are_migrated(
    tmp_path: Path,
) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)  # the audit table as the first gateway version wrote it
    old.executescript(
        "CREATE TABLE audit (id TEXT PRIMARY KEY, ts REAL NOT NULL, by TEXT NOT NULL, host TEXT,"
        " vm TEXT, name TEXT, action TEXT NOT NULL, params TEXT NOT NULL, result TEXT NOT NULL,"
        " error TEXT, updated_at REAL NOT NULL, finished_at REAL);"
        "INSERT INTO audit VALUES ('j0', 1.0, 'bob', 'a', 'u', 'web', 'start', '{}',"
        " 'succeeded', NULL, 1.0, 1.0);"
    )
    old.commit()
    old.close()
    store = Store(str(path), history_minutes=1, audit_days=100000)  # writer not started
    assert store.job("j0") is not None and store.job("j0").state is None  # type: ignore[union-attr]
    store.record_now(dataclasses.replace(entry("j1", "accepted"), state="running", changed=False))
    got = Store(str(path), history_minutes=1, audit_days=1).job("j1")  # another connection
    assert got is not None
    assert (got.result, got.state, got.changed) == ("accepted", "running", False)
    assert [e.id for e in store.jobs(10)] == ["j1", "j0"]
    assert store.job("nope") is None


def test_jobs_lists_every_unfinished_job_beyond_the_limit(store: Store) -> None:
    store.record(entry("old-running", "accepted"))
    for i in range(3):
        done = entry(f"done{i}", "succeeded")
        store.record(dataclasses.replace(done, finished_at=done.updated_at))
    store.record(entry("refused", "refused"))
    assert store.flush()
    assert [e.id for e in store.jobs(2)] == ["done2", "done1", "old-running"]


# -- unit (no I/O): a store built, not started -----------------------------------------------------


@pytest.mark.unit
def test_an_unusable_path_refuses_to_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = Store(str(blocker / "gw.db"), 1, 1)  # built: nothing is opened yet
    with pytest.raises(StoreError, match=r"cannot open the database .*gw\.db"):
        store.start()


@pytest.mark.unit
def test_building_a_store_leaves_no_file(tmp_path: Path) -> None:
    Store(str(tmp_path / "sub" / "gw.db"), 1, 1)
    assert list(tmp_path.iterdir()) == []
