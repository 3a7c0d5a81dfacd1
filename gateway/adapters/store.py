"""The SQLite file (`KVMSUP_DB`): metrics history, agent events, command audit across restarts.

One writer thread fed by a queue commits in batches; readers use their own connections (WAL).
Every SQLite call goes through `gateway.blocking.call`, so under gevent it runs on a native
thread and never holds the event loop. History keeps each VM's current minute in memory
(`gateway.core.history`) and writes one row per VM-minute (`gateway.adapters.history_db`).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gateway import blocking
from gateway.adapters import audit_db
from gateway.adapters.history_db import HistoryTables, Windows, migrate_rows
from gateway.core.drops import Drops
from gateway.core.history import Closed, Tail, at_most, ticks_at_most
from gateway.core.records import AuditEntry, History, history_points, tick_points
from shared.messages import MetricsBatch, VmEvent

logger = logging.getLogger(__name__)

Write = tuple[str, Sequence[tuple[Any, ...]], int]  # sql, rows, droppable weight (0: never)
Item = Write | list[Closed] | threading.Event | None  # a write, ended minutes, a flush, stop
PRUNE_EVERY_S = 60.0
SWEEP_EVERY_S = 10.0  # how often minutes of VMs that went quiet are ended
BATCH_MAX = 1000
READERS_KEPT = 8  # idle reader connections kept open
WAL_LIMIT_BYTES = 64 * 1024 * 1024
R = TypeVar("R")


class StoreError(RuntimeError):
    """The database file cannot be opened or created; the gateway refuses to start."""


class Store:
    """Writes never block their caller (the MQTT ingest thread, request threads): they are
    queued for the one writer thread, which commits them in batches. Audit entries (jobs and
    refusals) are few, one per command and status, and are never dropped. Metrics history
    and agent events come at the agents' pace: once `queue_max` rows of those (a VM-minute of
    history is one row) wait for the writer, more are dropped and counted (`store_full`)
    rather than let memory grow or stall the cache. History reads merge the minutes still in
    memory, so they show a tick as soon as it is ingested; other reads see what has been
    committed, so they lag the cache by at most one batch."""

    def __init__(
        self,
        path: str,
        history_minutes: int,
        audit_days: int,
        queue_max: int = 20000,
        drops: Drops | None = None,
        *,
        minute_hours: int = 24,
        quarter_days: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.windows = Windows.of(history_minutes, minute_hours, quarter_days)
        self.audit_s = audit_days * 86400.0
        self.drops = drops or Drops()
        self._clock = clock
        # Unbounded: the bound applies to the droppable writes only (`_bulk` rows queued).
        self._queue: queue.Queue[Item] = queue.Queue()
        self._queue_max = queue_max
        self._bulk = 0
        self._bulk_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()
        self._tail = Tail()
        self._tables = HistoryTables(self.windows)
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        # The file is made by `open` (from `start`, or the first read), not here: building the
        # app must leave no trace on disk, and a test that only builds it needs no database.
        self._opened = False
        self._open_lock = threading.Lock()

    def open(self) -> None:
        """Create the file, its directory and its tables, once; StoreError when the path
        cannot take them (the gateway then refuses to start)."""
        if self._opened:  # every read passes here: no lock once the file is there
            return
        with self._open_lock:
            if self._opened:
                return
            path = self.path
            try:
                if path != ":memory:" and not path.startswith("file:"):
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                conn = blocking.call(self._connect)
                try:
                    blocking.call(self._create, conn)
                finally:
                    blocking.call(conn.close)
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"cannot open the database {path!r}: {exc}") from exc
            self._opened = True

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
        # The WAL file keeps the size of its largest burst (a minute of a big fleet) unless told.
        conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        return conn

    def _create(self, conn: sqlite3.Connection) -> None:
        # Packed minute rows are ~1.4 KiB: 8 KiB pages hold five of them where 4 KiB pages
        # hold two and waste a third. Only a new file takes it (before WAL is on).
        conn.execute("PRAGMA page_size=8192")
        conn.execute("PRAGMA journal_mode=WAL")
        audit_db.create(conn)
        self._tables.create(conn, self._clock())
        migrate_rows(conn, self._tables)
        conn.commit()

    def _read(self, fn: Callable[..., R], *args: Any) -> R:
        """`fn(conn, *args)` on a reader connection of its own, off the event loop."""
        self.open()
        with self._idle_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = blocking.call(self._connect)
        try:
            return blocking.call(fn, conn, *args)
        finally:
            with self._idle_lock:
                keep = len(self._idle) < READERS_KEPT
                if keep:
                    self._idle.append(conn)
            if not keep:
                blocking.call(conn.close)

    def start(self) -> None:
        """Open the file (StoreError when it cannot be), then start the writer."""
        self.open()
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Commit what is queued and the minutes in memory, then end the writer. Writes queued
        after this are lost: stop whatever makes them (the ingest thread) first. The wait
        allows for a big fleet: 10,000 VMs' open minutes are 10,000 rows."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            blocking.call(conn.close)

    def minutes_in_memory(self) -> tuple[int, int]:
        """VM-minutes of history held in memory: (open, ended but not committed yet)."""
        return self._tail.counts()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every write queued so far is committed (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    # -- writes (any thread; never blocks) ---------------------------------------------------
    def _room(self, weight: int, what: str, lost: str) -> bool:
        """Count `weight` droppable rows in, or drop and count them when `queue_max` such rows
        already wait for the writer."""
        with self._bulk_lock:
            if self._bulk + weight > self._queue_max:
                full = True
            else:
                full = False
                self._bulk += weight
        if full:
            self.drops.drop("store_full", what, f"the database writer is behind: {lost} lost")
        return not full

    def _put(self, sql: str, rows: Sequence[tuple[Any, ...]], what: str | None = None) -> None:
        """Queue one write. `what` names a droppable one (events): it is dropped and counted
        when the writer is `queue_max` rows behind. Audit writes always queue."""
        if what is not None and not self._room(len(rows), what, f"{len(rows)} row(s)"):
            return
        self._queue.put((sql, rows, len(rows) if what is not None else 0))

    def add_metrics(self, batch: MetricsBatch) -> None:
        """Each VM's tick joins its minute in memory; the minutes this batch ended are queued
        for the writer as one item (one row per VM-minute, not per tick)."""
        closed = self._tail.add(batch, self._clock())
        if closed:
            if self._room(len(closed), "history", f"{len(closed)} VM-minute(s) of history"):
                self._queue.put(closed)
            else:
                self._tail.forget(closed)

    def add_event(self, event: VmEvent) -> None:
        self._put(
            "INSERT INTO events (ts, host, kind, uuid, name, body) VALUES (?,?,?,?,?,?)",
            [
                (
                    event.ts.timestamp(),
                    event.host,
                    event.kind,
                    event.uuid,
                    event.name,
                    event.model_dump_json(),
                )
            ],
            "events",
        )

    def record(self, entry: AuditEntry) -> None:
        """Insert or update (same id) one audit entry."""
        self._put(audit_db.AUDIT_UPSERT, [entry.row()])

    def record_now(self, entry: AuditEntry) -> None:
        """Insert or update one audit entry and commit before returning: a job is on disk
        before its command is published, so a gateway killed right after still knows it.
        StoreError when the file cannot take it."""
        try:
            self._read(_upsert_now, entry.row())
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record job {entry.id} in {self.path!r}: {exc}") from exc

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        conn = blocking.call(self._connect)
        next_prune = next_sweep = 0.0
        while True:
            try:
                items: list[Item] = [self._queue.get(timeout=SWEEP_EVERY_S)]
            except queue.Empty:
                items = []
            while len(items) < BATCH_MAX:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            writes = [i for i in items if isinstance(i, tuple)]
            closed = [c for i in items if isinstance(i, list) for c in i]
            bulk = sum(w[2] for w in writes) + len(closed)
            if bulk:
                with self._bulk_lock:
                    self._bulk -= bulk
            now = self._clock()
            stopping = None in items
            if stopping:
                closed += self._tail.close_all()
            elif now >= next_sweep:
                next_sweep = now + SWEEP_EVERY_S
                # A VM quiet for a whole minute (host offline, VM gone) ends its minute.
                closed += self._tail.sweep(int(now // 60) - 1)
            prune = stopping or now >= next_prune
            if prune:
                next_prune = now + PRUNE_EVERY_S
            for message, exc in blocking.call(
                self._commit, conn, writes, closed, now if prune else None
            ):
                logger.error("%s (%s): %s", message, self.path, exc)
            self._tail.forget(closed)
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
            if stopping:
                blocking.call(conn.close)
                return

    def _commit(
        self,
        conn: sqlite3.Connection,
        writes: list[Write],
        closed: list[Closed],
        prune_at: float | None,
    ) -> list[tuple[str, Exception]]:
        """One batch, on a native thread: nothing here may log (logging's locks belong to
        the event loop under gevent), so errors are handed back."""
        errors: list[tuple[str, Exception]] = []
        try:
            with conn:
                for sql, rows, _weight in writes:
                    conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            errors.append((f"writing {len(writes)} batch(es)", exc))
        try:  # apart: a history row that fails never takes an audit entry down with it
            with conn:
                self._tables.write(conn, closed)
        except sqlite3.Error as exc:
            self._tables.forget_ids()  # ids made in the rolled-back transaction are gone
            errors.append((f"writing {len(closed)} VM-minute(s) of history", exc))
        if prune_at is not None:
            try:
                with conn:
                    self._tables.maintain(conn, prune_at)
                    conn.execute("DELETE FROM events WHERE ts < ?", (prune_at - self.audit_s,))
                    conn.execute("DELETE FROM audit WHERE ts < ?", (prune_at - self.audit_s,))
            except sqlite3.Error as exc:
                self._tables.forget_ids()
                errors.append(("pruning", exc))
        return errors

    # -- reads (request threads) --------------------------------------------------------------
    def history(self, host: str, uuid: str, minutes: float, points: int | None = None) -> History:
        """One VM's points of the last `minutes`, at the finest resolution kept that far
        back, as at most `points` points (averages and maxima over equal intervals)."""
        until = self._clock()
        start = until - minutes * 60.0
        key = (host, uuid)
        tail = self._tail.of(key)
        tier = self.windows.tier(minutes)
        if tier == "full":
            ticks = self._read(self._tables.read_ticks, key, start, until, tail)
            if points is None or len(ticks) <= points:
                return History(tier, None, tick_points(ticks))
            aggs = blocking.call(ticks_at_most, ticks, points, start, until)
        else:
            aggs = self._read(self._tables.read_aggs, key, start, until, tail, tier)
            if points is None or len(aggs) <= points:
                return History(tier, 60.0 if tier == "1m" else 900.0, history_points(aggs))
            aggs = blocking.call(at_most, aggs, points, start, until)
        return History(tier, minutes * 60.0 / points, history_points(aggs))

    def events(
        self,
        *,
        host: str | None = None,
        vm: str | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[VmEvent]:
        """Newest first (by arrival)."""
        rows = self._read(_all, *audit_db.events_query(host, vm, kind, limit))
        return [VmEvent.model_validate_json(r[0]) for r in rows]

    def audit(
        self, *, limit: int = 100, vm: str | None = None, **equal: str | None
    ) -> list[AuditEntry]:
        """Newest first; `equal` filters on by, host, action, result."""
        rows = self._read(_all, *audit_db.audit_query(limit, vm, equal))
        return [AuditEntry.from_row(tuple(r)) for r in rows]

    def jobs(self, limit: int) -> list[AuditEntry]:
        """The newest `limit` entries that are jobs (not refusals), and every unfinished job
        however old (a restarted gateway must still end it), newest first."""
        rows = self._read(_all, *audit_db.jobs_query(limit))
        return [AuditEntry.from_row(tuple(r)) for r in rows]

    def job(self, job_id: str) -> AuditEntry | None:
        rows = self._read(_all, *audit_db.job_query(job_id))
        return AuditEntry.from_row(tuple(rows[0])) if rows else None


def _all(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, args).fetchall()


def _upsert_now(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    with conn:
        conn.execute(audit_db.AUDIT_UPSERT, row)
