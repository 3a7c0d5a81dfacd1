"""The history tables of `KVMSUP_DB`: one row per VM-minute (its ticks packed, plus the
minute's averages and maxima), 15-minute rows rolled up from those, retention, and reads.

Every function takes a connection and runs on whatever thread calls it: the store hands
them to `gateway.blocking.call`, so nothing here may touch a lock or a queue of the caller.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass

from gateway.core.history import FIELDS, NAN, TICK, Agg, Closed, Key, Minute, Tick, bucket

_AGG_COLS = ", ".join(f"{f}_avg REAL, {f}_max REAL" for f in FIELDS)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS history_vms (
    id INTEGER PRIMARY KEY, host TEXT NOT NULL, uuid TEXT NOT NULL,
    last_minute INTEGER NOT NULL, UNIQUE (host, uuid));
CREATE TABLE IF NOT EXISTS history_ticks (minute INTEGER NOT NULL, vm INTEGER NOT NULL,
    points BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS history_ticks_key ON history_ticks (minute, vm);
CREATE TABLE IF NOT EXISTS history_1m (t INTEGER NOT NULL, vm INTEGER NOT NULL,
    n INTEGER NOT NULL, {_AGG_COLS}, PRIMARY KEY (t, vm)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history_15m (t INTEGER NOT NULL, vm INTEGER NOT NULL,
    n INTEGER NOT NULL, {_AGG_COLS}, PRIMARY KEY (t, vm)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# Keys lead with the time, so each minute's rows append at the end of every b-tree (a few
# pages written per minute, not one page per VM) and retention deletes a leading range.

_NAMES = ", ".join(f"{f}_avg, {f}_max" for f in FIELDS)
_MARKS = ", ".join("?" for _ in range(3 + 2 * len(FIELDS)))


# Aggregates are kept in hundredths (MiB whole), rounded: SQLite writes a REAL with no
# fraction as a small integer (1 to 6 bytes instead of 8), which halves these rows; the
# agent's figures have two decimals, so maxima stay exact and averages keep two decimals.
SCALES = (100, 100, 1, 100, 100, 100, 100)


def _merge_avg(f: str) -> str:
    return (
        f"{f}_avg = CASE WHEN {f}_avg IS NULL THEN excluded.{f}_avg "
        f"WHEN excluded.{f}_avg IS NULL THEN {f}_avg "
        f"ELSE round(({f}_avg * n + excluded.{f}_avg * excluded.n) / (n + excluded.n)) END"
    )


def _merge_max(f: str) -> str:
    # SQLite's two-argument max() is null when either is: keep the one that is not.
    return f"{f}_max = coalesce(max({f}_max, excluded.{f}_max), {f}_max, excluded.{f}_max)"


# A minute written in two parts (a gateway restarted within it) keeps both parts: ticks are
# concatenated, averages weighted by their tick counts (SET reads the row as it was).
_UPSERT_MINUTE = (
    f"INSERT INTO history_1m (t, vm, n, {_NAMES}) VALUES ({_MARKS}) "
    f"ON CONFLICT (t, vm) DO UPDATE SET "
    + ", ".join([*(_merge_avg(f) for f in FIELDS), *(_merge_max(f) for f in FIELDS)])
    + ", n = n + excluded.n"
)
# A minute written after its quarter was rolled up (a writer that fell minutes behind the
# clock) is merged into that quarter's row the same way, instead of being left out of it.
_UPSERT_QUARTER = _UPSERT_MINUTE.replace("INTO history_1m", "INTO history_15m", 1)
_UPSERT_TICKS = (
    "INSERT INTO history_ticks (minute, vm, points) VALUES (?, ?, ?) "
    "ON CONFLICT (minute, vm) DO UPDATE SET points = CAST(points || excluded.points AS BLOB)"
)
_ROLLUP = (
    f"INSERT OR REPLACE INTO history_15m (t, vm, n, {_NAMES}) "
    "SELECT t / 15, vm, sum(n), "
    + ", ".join(
        f"round(sum({f}_avg * n) / sum(CASE WHEN {f}_avg IS NOT NULL THEN n END)), max({f}_max)"
        for f in FIELDS
    )
    + " FROM history_1m WHERE t >= ? AND t < ? GROUP BY t / 15, vm"
)
# The rows of one VM over a span of keys: one index seek per key, whatever the fleet's size.
_SPAN = "WITH RECURSIVE k(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM k WHERE x < ?) "

# A minute is complete (its rows written) a little after it ends: ticks arrive, a quiet
# VM's minute is swept. The 15-minute rollup waits that long past the quarter's end.
SETTLE_MINUTES = 3
# Rows stamped further ahead of the gateway's clock than this are pruned like expired ones.
FUTURE_MINUTES = 10
# How often a VM's `last_minute` is refreshed: it only has to outlive the longest window.
LAST_SEEN_EVERY = 60


@dataclass(frozen=True)
class Windows:
    """How long each resolution is kept, in minutes (0: that tier is off)."""

    full: int
    minute: int
    quarter: int

    @classmethod
    def of(cls, full_minutes: int, minute_hours: int, quarter_days: int) -> Windows:
        return cls(full_minutes, minute_hours * 60, quarter_days * 1440)

    @property
    def longest(self) -> int:
        return max(self.full, self.minute, self.quarter)

    def tier(self, minutes: float) -> str:
        """The finest resolution that reaches back `minutes`."""
        if minutes <= self.full:
            return "full"
        if minutes <= self.minute:
            return "1m"
        return "15m"


class HistoryTables:
    """Owned by the store's writer (writes, retention) and shared by readers (reads)."""

    def __init__(self, windows: Windows) -> None:
        self.windows = windows
        self._ids: dict[Key, tuple[int, int]] = {}  # writer only: id, last_minute written

    def create(self, conn: sqlite3.Connection, now: float) -> None:
        conn.executescript(SCHEMA)
        conn.execute(
            "INSERT OR IGNORE INTO history_meta VALUES ('rolled', ?)", (int(now // 60) // 15,)
        )

    def _vm_id(self, conn: sqlite3.Connection, key: Key, minute: int) -> int:
        known = self._ids.get(key)
        if known is not None and minute < known[1] + LAST_SEEN_EVERY:
            return known[0]
        conn.execute(
            "INSERT INTO history_vms (host, uuid, last_minute) VALUES (?, ?, ?) "
            "ON CONFLICT (host, uuid) DO UPDATE SET "
            "last_minute = max(last_minute, excluded.last_minute)",
            (*key, minute),
        )
        row = conn.execute("SELECT id FROM history_vms WHERE host = ? AND uuid = ?", key).fetchone()
        self._ids[key] = (row[0], minute)
        return int(row[0])

    def write(self, conn: sqlite3.Connection, closed: list[Closed]) -> None:
        """The ended minutes: their ticks, and their averages and maxima (inside the caller's
        transaction; on an error the caller rolls back and calls `forget_ids`)."""
        ticks, minutes, ends = [], [], []
        for key, buf in closed:
            if not buf.raw:
                continue
            vm = self._vm_id(conn, key, buf.minute)
            agg = buf.summary()
            avgs = agg.avgs()
            values: list[int | None] = []
            for avg, peak, scale in zip(avgs, agg.maxs, SCALES, strict=True):
                values += (_scaled(avg, scale), _scaled(peak, scale))
            ticks.append((buf.minute, vm, bytes(buf.raw)))
            minutes.append((buf.minute, vm, agg.n, *values))
            ends.append(buf.minute)
        if self.windows.full:
            conn.executemany(_UPSERT_TICKS, ticks)
        conn.executemany(_UPSERT_MINUTE, minutes)
        if self.windows.quarter and ends:
            rolled = _rolled(conn, min(ends))
            late = [
                (m // 15, *row[1:]) for m, row in zip(ends, minutes, strict=True) if m < rolled * 15
            ]
            if late:
                conn.executemany(_UPSERT_QUARTER, late)

    def forget_ids(self) -> None:
        self._ids.clear()

    def maintain(self, conn: sqlite3.Connection, now: float) -> None:
        """Roll complete quarters into 15-minute rows, then drop what outlived its window."""
        now_min = int(now // 60)
        w = self.windows
        rolled = _rolled(conn, now_min)
        if w.quarter:
            upto = (now_min - SETTLE_MINUTES) // 15
            rolled = max(rolled, (now_min - w.quarter) // 15)
            if upto > rolled:
                conn.execute(_ROLLUP, (rolled * 15, upto * 15))
                rolled = upto
                conn.execute("UPDATE history_meta SET value = ? WHERE key = 'rolled'", (rolled,))
        else:
            rolled = now_min // 15
        # A tick stamped far ahead (an agent's clock, or a forged `ts`) would never age out.
        ahead = now_min + FUTURE_MINUTES
        conn.execute(
            "DELETE FROM history_ticks WHERE minute < ? OR minute > ?", (now_min - w.full, ahead)
        )
        # Minute rows wait for their rollup even when the 1-minute tier is shorter.
        keep_1m = min(now_min - w.minute, rolled * 15)
        conn.execute("DELETE FROM history_1m WHERE t < ? OR t > ?", (keep_1m, ahead))
        conn.execute("DELETE FROM history_15m WHERE t < ?", ((now_min - w.quarter) // 15,))
        gone = conn.execute(
            "DELETE FROM history_vms WHERE last_minute < ?",
            (now_min - w.longest - 2 * LAST_SEEN_EVERY,),
        ).rowcount
        if gone:
            self._ids.clear()

    # -- reads -------------------------------------------------------------------------------
    def read_ticks(
        self, conn: sqlite3.Connection, key: Key, since: float, until: float, tail: list[Minute]
    ) -> list[Tick]:
        """One VM's ticks in [since, until], the uncommitted `tail` merged in. A closed minute
        of the tail wins over the row of its minute (committed a moment ago, the row holds it
        whole); the open one adds to it (the row is the part written before a restart)."""
        first, last = math.floor(since / 60), math.floor(until / 60)
        by_minute = {m.minute: m for m in self._ticks(conn, _vm(conn, key), first, last)}
        for m in tail:
            row = by_minute.get(m.minute)
            if m.unwritten and row is not None:
                m.raw[:0] = row.raw
            by_minute[m.minute] = m
        ticks = [p for m in sorted(by_minute) for p in by_minute[m].ticks()]
        return [p for p in ticks if since <= p[0] <= until]

    def read_aggs(
        self,
        conn: sqlite3.Connection,
        key: Key,
        since: float,
        until: float,
        tail: list[Minute],
        tier: str,
    ) -> list[Agg]:
        """One VM's minutes (`1m`) or quarters (`15m`) from the one holding `since`, the
        uncommitted `tail` merged in."""
        vm = _vm(conn, key)
        first, last = math.floor(since / 60), math.floor(until / 60)
        quarters: list[Agg] = []
        if tier == "15m":
            rolled = _rolled(conn, last)
            quarters = self._aggs(conn, "history_15m", vm, first // 15, rolled - 1, 900)
            first = max(first, rolled * 15)  # the minutes not rolled up yet
        minutes = {int(a.t // 60): a for a in self._aggs(conn, "history_1m", vm, first, last, 60)}
        for m in tail:  # as in read_ticks: the open minute adds to its row, a closed one wins
            if m.minute >= first:
                point, row = m.summary(), minutes.get(m.minute)
                if m.unwritten and row is not None:
                    row.merge(point)
                    point = row
                minutes[m.minute] = point
        points = quarters + [minutes[k] for k in sorted(minutes)]
        return bucket(points, 900.0) if tier == "15m" else points

    def _ticks(
        self, conn: sqlite3.Connection, vm: int | None, first: int, last: int
    ) -> list[Minute]:
        if vm is None:
            return []
        rows = conn.execute(
            _SPAN + "SELECT minute, points FROM k JOIN history_ticks ON minute = x AND vm = ?",
            (first, last, vm),
        ).fetchall()
        return [Minute(minute, points) for minute, points in rows]

    @staticmethod
    def _aggs(
        conn: sqlite3.Connection, table: str, vm: int | None, first: int, last: int, width: int
    ) -> list[Agg]:
        if vm is None or last < first:
            return []
        rows = conn.execute(
            _SPAN + f"SELECT t, n, {_NAMES} FROM k JOIN {table} ON t = x AND vm = ?",
            (first, last, vm),
        ).fetchall()
        return [
            Agg.of_row(t * width, n, _unscaled(r[0::2]), _unscaled(r[1::2])) for t, n, *r in rows
        ]


def _scaled(value: float | None, scale: int) -> int | None:
    return None if value is None else round(value * scale)


def _unscaled(values: list[float | None]) -> list[float | None]:
    return [None if v is None else v / s for v, s in zip(values, SCALES, strict=True)]


def _vm(conn: sqlite3.Connection, key: Key) -> int | None:
    row = conn.execute("SELECT id FROM history_vms WHERE host = ? AND uuid = ?", key).fetchone()
    return None if row is None else int(row[0])


def _rolled(conn: sqlite3.Connection, now_min: int) -> int:
    """The first quarter (15-minute index) not rolled up yet."""
    row = conn.execute("SELECT value FROM history_meta WHERE key = 'rolled'").fetchone()
    return int(row[0]) if row is not None else now_min // 15


def migrate_rows(conn: sqlite3.Connection, tables: HistoryTables) -> int:
    """A file of an earlier gateway kept one `history` row per tick: its ticks become
    minute rows once (the next prune applies the windows), and the old table goes."""
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'history'"
    ).fetchone():
        return 0
    rows = conn.execute(
        "SELECT host, uuid, ts, cpu_percent, memory_percent, memory_used_mb, disk_read_bps, "
        "disk_write_bps, net_rx_bps, net_tx_bps FROM history ORDER BY host, uuid, ts"
    )
    closed: list[Closed] = []
    last: tuple[Key, Minute] | None = None
    for host, uuid, ts, *values in rows:
        ms = round(ts * 1000)
        minute = ms // 60000
        if last is None or last[0] != (host, uuid) or last[1].minute != minute:
            last = ((host, uuid), Minute(minute))
            closed.append(last)
        f = [NAN if v is None else v for v in values[:3]]
        d = [v or 0.0 for v in values[3:]]
        last[1].raw += TICK.pack(ms - minute * 60000, *f, *d)
    tables.write(conn, closed)
    conn.execute("DROP TABLE history")
    return len(closed)
