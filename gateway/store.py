"""The SQLite file (`KVMSUP_DB`): metrics history, agent events, command audit across restarts.

One writer thread fed by a queue commits in batches; readers use their own connections (WAL).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.drops import Drops
from gateway.records import REFUSED, AuditEntry, HistoryPoint, from_epoch, history_point
from shared.messages import MetricsBatch, VmEvent

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    host TEXT NOT NULL, uuid TEXT NOT NULL, ts REAL NOT NULL,
    cpu_percent REAL, memory_percent REAL, memory_used_mb REAL,
    disk_read_bps REAL, disk_write_bps REAL, net_rx_bps REAL, net_tx_bps REAL);
CREATE INDEX IF NOT EXISTS history_vm ON history (host, uuid, ts);
CREATE INDEX IF NOT EXISTS history_ts ON history (ts);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, host TEXT NOT NULL,
    kind TEXT NOT NULL, uuid TEXT, name TEXT, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS audit (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, by TEXT NOT NULL, host TEXT, vm TEXT, name TEXT,
    action TEXT NOT NULL, params TEXT NOT NULL, result TEXT NOT NULL, error TEXT,
    updated_at REAL NOT NULL, finished_at REAL);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
"""
AUDIT_COLUMNS = (
    "id, ts, by, host, vm, name, action, params, result, error, updated_at, finished_at, "
    "state, changed, escalated, accepted_at, revised"
)
AUDIT_UPSERT = (
    f"INSERT OR REPLACE INTO audit ({AUDIT_COLUMNS}) "
    f"VALUES ({', '.join('?' for _ in AUDIT_COLUMNS.split(','))})"
)
# Added since the first schema: a file written by an older gateway gets them on open.
AUDIT_ADDED = {
    "state": "TEXT",
    "changed": "INTEGER",
    "escalated": "INTEGER",
    "accepted_at": "REAL",
    "revised": "TEXT",
}
HISTORY_COLUMNS = (
    "ts, cpu_percent, memory_percent, memory_used_mb, disk_read_bps, "
    "disk_write_bps, net_rx_bps, net_tx_bps"
)

Write = tuple[str, Sequence[tuple[Any, ...]], bool]  # sql, rows, droppable
PRUNE_EVERY_S = 60.0
BATCH_MAX = 1000


class StoreError(RuntimeError):
    """The database file cannot be opened or created; the gateway refuses to start."""


class Store:
    """Writes never block their caller (the MQTT ingest thread, request threads): they are
    queued for the one writer thread, which commits them in batches. Audit entries (jobs and
    refusals) are few, one per command and status, and are never dropped. Metrics history
    and agent events come at the agents' pace: once `queue_max` of those wait for the writer,
    more are dropped and counted (`store_full`) rather than let memory grow or stall the
    cache. Reads see what has been committed, so they lag the cache by at most one batch."""

    def __init__(
        self,
        path: str,
        history_minutes: int,
        audit_days: int,
        queue_max: int = 20000,
        drops: Drops | None = None,
    ) -> None:
        self.path = path
        self.history_s = history_minutes * 60.0
        self.audit_s = audit_days * 86400.0
        self.drops = drops or Drops()
        # Unbounded: the bound applies to the droppable writes only (`_bulk` of them queued).
        self._queue: queue.Queue[Write | threading.Event | None] = queue.Queue()
        self._queue_max = queue_max
        self._bulk = 0
        self._bulk_lock = threading.Lock()
        self._local = threading.local()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        try:
            if path != ":memory:" and not path.startswith("file:"):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            have = {r[1] for r in conn.execute("PRAGMA table_info(audit)")}
            for column, kind in AUDIT_ADDED.items():
                if column not in have:
                    conn.execute(f"ALTER TABLE audit ADD COLUMN {column} {kind}")
            conn.commit()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the database {path!r}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Commit what is queued, then end the writer. Writes queued after this are lost:
        stop whatever makes them (the ingest thread) first."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every write queued so far is committed (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    # -- writes (any thread; never blocks) ---------------------------------------------------
    def _put(self, sql: str, rows: Sequence[tuple[Any, ...]], what: str | None = None) -> None:
        """Queue one write. `what` names a droppable one (history, events): it is dropped and
        counted when the writer is `queue_max` of those behind. Audit writes always queue."""
        if what is not None:
            with self._bulk_lock:
                if self._bulk >= self._queue_max:
                    full = True
                else:
                    full = False
                    self._bulk += 1
            if full:
                self.drops.drop(
                    "store_full", what, f"the database writer is behind: {len(rows)} row(s) lost"
                )
                return
        self._queue.put((sql, rows, what is not None))

    def add_metrics(self, batch: MetricsBatch) -> None:
        rows = []
        for m in batch.vms:
            p = history_point(m)
            rows.append(
                (
                    m.host or batch.host,
                    m.uuid,
                    p.ts.timestamp(),
                    p.cpu_percent,
                    p.memory_percent,
                    p.memory_used_mb,
                    p.disk_read_bps,
                    p.disk_write_bps,
                    p.net_rx_bps,
                    p.net_tx_bps,
                )
            )
        if rows:
            self._put(
                f"INSERT INTO history (host, uuid, {HISTORY_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
                "history",
            )

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
        self._put(
            AUDIT_UPSERT,
            [entry.row()],
        )

    def record_now(self, entry: AuditEntry) -> None:
        """Insert or update one audit entry and commit before returning: a job is on disk
        before its command is published, so a gateway killed right after still knows it.
        StoreError when the file cannot take it."""
        conn = self._reader()
        try:
            with conn:
                conn.execute(AUDIT_UPSERT, entry.row())
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record job {entry.id} in {self.path!r}: {exc}") from exc

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        conn = self._connect()
        next_prune = 0.0
        while True:
            items = [self._queue.get()]
            while len(items) < BATCH_MAX:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            writes = [i for i in items if isinstance(i, tuple)]
            bulk = sum(1 for w in writes if w[2])
            if bulk:
                with self._bulk_lock:
                    self._bulk -= bulk
            try:
                with conn:
                    for sql, rows, _bulk in writes:
                        conn.executemany(sql, rows)
            except sqlite3.Error:
                logger.exception("writing %d batch(es) to %s failed", len(writes), self.path)
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY_S
                self._prune(conn, time.time())
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
            if None in items:
                conn.close()
                return

    def _prune(self, conn: sqlite3.Connection, now: float) -> None:
        try:
            with conn:
                conn.execute("DELETE FROM history WHERE ts < ?", (now - self.history_s,))
                conn.execute("DELETE FROM events WHERE ts < ?", (now - self.audit_s,))
                conn.execute("DELETE FROM audit WHERE ts < ?", (now - self.audit_s,))
        except sqlite3.Error:
            logger.exception("pruning %s failed", self.path)

    # -- reads (request threads) --------------------------------------------------------------
    def history(self, host: str, uuid: str, since: datetime) -> list[HistoryPoint]:
        rows = (
            self._reader()
            .execute(
                f"SELECT {HISTORY_COLUMNS} FROM history WHERE host = ? AND uuid = ? AND ts >= ? "
                "ORDER BY ts",
                (host, uuid, since.timestamp()),
            )
            .fetchall()
        )
        # memory_used_mb sits in a REAL column (SQLite hands back 925.0): an int again.
        return [
            HistoryPoint(
                from_epoch(r[0]), r[1], r[2], None if r[3] is None else round(r[3]), *r[4:]
            )
            for r in rows
        ]

    def events(
        self,
        *,
        host: str | None = None,
        vm: str | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[VmEvent]:
        """Newest first (by arrival)."""
        where, args = _filters(host=host, kind=kind)
        if vm:
            where.append("(uuid = ? OR name = ?)")
            args += [vm, vm]
        rows = (
            self._reader()
            .execute(
                f"SELECT body FROM events {_where(where)} ORDER BY seq DESC LIMIT ?", [*args, limit]
            )
            .fetchall()
        )
        return [VmEvent.model_validate_json(r[0]) for r in rows]

    def audit(
        self, *, limit: int = 100, vm: str | None = None, **equal: str | None
    ) -> list[AuditEntry]:
        """Newest first; `equal` filters on by, host, action, result."""
        where, args = _filters(**equal)
        if vm:
            where.append("(vm = ? OR name = ?)")
            args += [vm, vm]
        rows = (
            self._reader()
            .execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit {_where(where)} ORDER BY ts DESC LIMIT ?",
                [*args, limit],
            )
            .fetchall()
        )
        return [AuditEntry.from_row(tuple(r)) for r in rows]

    def jobs(self, limit: int) -> list[AuditEntry]:
        """The newest `limit` entries that are jobs (not refusals), and every unfinished job
        however old (a restarted gateway must still end it), newest first."""
        rows = (
            self._reader()
            .execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit WHERE result != ? AND (finished_at IS NULL "
                "OR id IN (SELECT id FROM audit WHERE result != ? ORDER BY ts DESC LIMIT ?)) "
                "ORDER BY ts DESC",
                (REFUSED, REFUSED, limit),
            )
            .fetchall()
        )
        return [AuditEntry.from_row(tuple(r)) for r in rows]

    def job(self, job_id: str) -> AuditEntry | None:
        row = (
            self._reader()
            .execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit WHERE id = ? AND result != ?",
                (job_id, REFUSED),
            )
            .fetchone()
        )
        return AuditEntry.from_row(tuple(row)) if row else None


def _filters(**equal: str | None) -> tuple[list[str], list[Any]]:
    # Column names come from the callers' keyword names (fixed in code), never from requests.
    where = [f"{column} = ?" for column, value in equal.items() if value]
    return where, [value for value in equal.values() if value]


def _where(clauses: list[str]) -> str:
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""
