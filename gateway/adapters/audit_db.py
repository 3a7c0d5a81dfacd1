"""The events and audit tables of `KVMSUP_DB`: schema, upgrades of older files, queries.

Queries are returned as (sql, args) for the store to run on a reader connection."""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.core.records import REFUSED

SCHEMA = """
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

Query = tuple[str, list[Any]]


def create(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    have = {r[1] for r in conn.execute("PRAGMA table_info(audit)")}
    for column, kind in AUDIT_ADDED.items():
        if column not in have:
            conn.execute(f"ALTER TABLE audit ADD COLUMN {column} {kind}")


def events_query(host: str | None, vm: str | None, kind: str | None, limit: int) -> Query:
    where, args = _filters(host=host, kind=kind)
    if vm:
        where.append("(uuid = ? OR name = ?)")
        args += [vm, vm]
    return f"SELECT body FROM events {_where(where)} ORDER BY seq DESC LIMIT ?", [*args, limit]


def audit_query(limit: int, vm: str | None, equal: dict[str, str | None]) -> Query:
    where, args = _filters(**equal)
    if vm:
        where.append("(vm = ? OR name = ?)")
        args += [vm, vm]
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit {_where(where)} ORDER BY ts DESC LIMIT ?"
    return sql, [*args, limit]


def jobs_query(limit: int) -> Query:
    return (
        f"SELECT {AUDIT_COLUMNS} FROM audit WHERE result != ? AND (finished_at IS NULL "
        "OR id IN (SELECT id FROM audit WHERE result != ? ORDER BY ts DESC LIMIT ?)) "
        "ORDER BY ts DESC",
        [REFUSED, REFUSED, limit],
    )


def job_query(job_id: str) -> Query:
    return f"SELECT {AUDIT_COLUMNS} FROM audit WHERE id = ? AND result != ?", [job_id, REFUSED]


def _filters(**equal: str | None) -> tuple[list[str], list[Any]]:
    # Column names come from the callers' keyword names (fixed in code), never from requests.
    where = [f"{column} = ?" for column, value in equal.items() if value]
    return where, [value for value in equal.values() if value]


def _where(clauses: list[str]) -> str:
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""
