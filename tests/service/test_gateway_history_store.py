"""Metrics history: minutes packed in memory, one row per VM-minute on a real SQLite file,
15-minute rollups, retention bounds over a simulated day, `points=` downsampling."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.adapters.store import Store
from tests.support.history import HOST, T0, batch, uuid, vm

pytestmark = pytest.mark.service


class Clock:
    """The store's notion of now, moved by the test (prune, rollup, sweep and reads use it)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def feed(store: Store, clock: Clock, vms: int, first_tick: int, ticks: int, every: int = 2) -> None:
    """`ticks` ticks of `every` seconds from tick `first_tick`; CPU counts the ticks of
    each minute (0..29 at 2 s)."""
    per_minute = 60 // every
    for k in range(first_tick, first_tick + ticks):
        ts = T0 + every * k
        clock.t = ts + 0.5
        cpu = float(k % per_minute)
        store.add_metrics(batch(ts, [vm(i, ts, cpu, k) for i in range(vms)]))


def test_a_day_of_ticks_stays_within_its_row_and_byte_bounds(tmp_path: Path) -> None:
    """26 simulated hours of 6 VMs at a 10 s tick (a 2 s tick is the benchmark's job:
    building the models is what takes the time here): every tick of the last hour, 1-minute
    averages and maxima for the day, 15-minute ones beyond, and no more rows or bytes than
    those windows hold, however long it runs."""
    path = tmp_path / "gw.db"
    clock = Clock(T0)
    vms, hours, every = 6, 26, 10
    per_minute = 60 // every
    store = Store(str(path), 60, 1, queue_max=10**6, clock=clock)
    store.start()
    feed(store, clock, vms, 0, hours * 3600 // every, every)
    assert store.flush(60)

    full = store.history(HOST, uuid(3), 60)
    assert full.resolution == "full" and full.resolution_s is None
    assert len(full.points) in (60 * per_minute, 60 * per_minute + 1)
    last = full.points[-1]
    assert last.cpu_percent == per_minute - 1
    # Figures come back as sent: two-decimal percentages, MiB, rates to the hundredth.
    assert (last.memory_percent, last.memory_used_mb) == (12.34, 1003)
    assert (last.disk_read_bps, last.net_rx_bps) == (300.75, 12_345_678.91)

    avg, peak = (per_minute - 1) / 2, float(per_minute - 1)
    day = store.history(HOST, uuid(3), 24 * 60)
    assert day.resolution == "1m" and day.resolution_s == 60
    assert 1440 <= len(day.points) <= 1441
    whole = day.points[1:]
    assert {(p.samples, p.cpu_percent, p.maxima[0]) for p in whole} == {(per_minute, avg, peak)}
    assert {(p.net_tx_bps, p.maxima[6], p.net_rx_bps) for p in whole} == {(1.0, 2.0, 12_345_678.91)}

    longer = store.history(HOST, uuid(3), hours * 60)
    assert longer.resolution == "15m" and longer.resolution_s == 900
    assert hours * 4 <= len(longer.points) <= hours * 4 + 1
    inner = longer.points[1:-1]
    assert {(p.samples, p.cpu_percent, p.maxima[0]) for p in inner} == {
        (15 * per_minute, avg, peak)
    }
    assert [p.ts for p in longer.points] == sorted(p.ts for p in longer.points)

    few = store.history(HOST, uuid(3), 24 * 60, points=10)
    assert len(few.points) <= 10 and few.resolution_s == 24 * 60 * 6
    assert sum(p.samples for p in few.points) == sum(p.samples for p in day.points)
    assert {p.maxima[0] for p in few.points} == {peak}

    clock.t += 61  # one more prune, then every minute in memory is written
    store.add_metrics(batch(clock.t, []))
    store.stop()
    db = sqlite3.connect(path)
    ticks, minutes, quarters = (
        db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("history_ticks", "history_1m", "history_15m")
    )
    assert ticks <= vms * 62  # the full-resolution hour, and the minute being written
    assert minutes <= vms * (24 * 60 + 20)  # a day, and the quarter waiting for its rollup
    assert quarters <= vms * (hours * 4 + 1)  # 30 days at most: 26 hours simulated
    page = db.execute("PRAGMA page_size").fetchone()[0]
    used = page * (
        db.execute("PRAGMA page_count").fetchone()[0]
        - db.execute("PRAGMA freelist_count").fetchone()[0]
    )
    db.close()
    # A VM-minute of ticks is 46 bytes a tick, an aggregate row ~160 bytes: per VM an hour
    # of the first and a day of the second. The file is what SQLite keeps of them.
    bound = vms * (62 * (per_minute * 46 + 100) + (24 * 60 + 20) * 200 + (hours * 4 + 1) * 200)
    assert used <= bound, (used, bound)
    assert path.stat().st_size <= 1.5 * bound, (path.stat().st_size, bound)


def test_a_minute_split_by_a_restart_keeps_both_parts(tmp_path: Path) -> None:
    path = str(tmp_path / "gw.db")
    clock = Clock(T0)
    first = Store(path, 60, 1, clock=clock)
    first.start()
    feed(first, clock, 1, 0, 10)  # 20 s of the first minute
    first.stop()
    second = Store(path, 60, 1, clock=clock)
    second.start()
    assert [p.cpu_percent for p in second.history(HOST, uuid(0), 5).points] == list(
        map(float, range(10))
    )
    feed(second, clock, 1, 10, 5)  # more of the same minute, still open in memory
    # The part in memory adds to the part the first run wrote; it does not hide it.
    assert [p.cpu_percent for p in second.history(HOST, uuid(0), 5).points] == list(
        map(float, range(15))
    )
    minute = second.history(HOST, uuid(0), 24 * 60).points[0]
    assert (minute.samples, minute.cpu_percent, minute.maxima[0]) == (15, 7.0, 14.0)
    feed(second, clock, 1, 15, 20)  # the rest of the minute, then into the next
    second.stop()
    third = Store(path, 60, 1, clock=clock)
    assert [p.cpu_percent for p in third.history(HOST, uuid(0), 5).points] == [
        float(k % 30) for k in range(35)
    ]
    minute = third.history(HOST, uuid(0), 24 * 60).points[0]
    assert (minute.samples, minute.cpu_percent, minute.maxima[0]) == (30, 14.5, 29.0)


def test_reads_see_ticks_still_in_memory_and_a_quiet_vm_is_written(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = Store(str(tmp_path / "gw.db"), 60, 1, clock=clock)
    store.start()
    feed(store, clock, 2, 0, 3)
    assert len(store.history(HOST, uuid(1), 5).points) == 3  # nothing committed yet
    clock.t += 120  # the host goes quiet: its minute is swept to disk
    store.add_metrics(batch(clock.t, []))
    store.stop()
    again = Store(str(tmp_path / "gw.db"), 60, 1, clock=clock)
    assert [p.cpu_percent for p in again.history(HOST, uuid(1), 5).points] == [0.0, 1.0, 2.0]


def test_ticks_stamped_far_ahead_do_not_stay_on_disk(tmp_path: Path) -> None:
    """An agent whose clock (or a forged `ts`) is days ahead must not grow the file for good."""
    path = tmp_path / "gw.db"
    clock = Clock(T0)
    store = Store(str(path), 60, 1, clock=clock)
    store.start()
    for day in range(1, 6):
        ts = T0 + day * 86400
        store.add_metrics(batch(ts, [vm(0, ts, 1.0, 0)]))
    feed(store, clock, 1, 0, 31)  # a minute of honest ticks, and a prune
    clock.t += 61
    store.add_metrics(batch(clock.t, []))
    store.stop()
    db = sqlite3.connect(path)
    assert db.execute("SELECT max(minute) FROM history_ticks").fetchone()[0] <= T0 // 60 + 1
    assert db.execute("SELECT max(t) FROM history_1m").fetchone()[0] <= T0 // 60 + 1


def test_a_file_of_the_per_tick_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE history (host TEXT NOT NULL, uuid TEXT NOT NULL, ts REAL NOT NULL,"
        " cpu_percent REAL, memory_percent REAL, memory_used_mb REAL, disk_read_bps REAL,"
        " disk_write_bps REAL, net_rx_bps REAL, net_tx_bps REAL);"
    )
    rows = [
        (HOST, uuid(0), T0 + 2.0 * k, None if k == 0 else 5.0 + k, 50.0, 512.0, 1, 2, 3, 4)
        for k in range(40)
    ]
    old.executemany("INSERT INTO history VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    old.commit()
    old.close()
    clock = Clock(T0 + 80)
    store = Store(str(path), 60, 1, clock=clock)
    points = store.history(HOST, uuid(0), 5).points
    assert [p.cpu_percent for p in points] == [None, *(5.0 + k for k in range(1, 40))]
    assert points[0].memory_used_mb == 512 and points[0].net_tx_bps == 4
    db = sqlite3.connect(path)
    assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'history'").fetchone()
