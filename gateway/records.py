"""What the gateway persists (history points, audit entries) and the pure rules making them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.messages import VmMetrics

# An audit entry's `result` for a command the gateway refused before any job existed.
REFUSED = "refused"


@dataclass(frozen=True)
class HistoryPoint:
    ts: datetime
    cpu_percent: float | None
    memory_percent: float | None
    memory_used_mb: int | None  # whole MiB, as the seed sends memory figures
    disk_read_bps: float
    disk_write_bps: float
    net_rx_bps: float
    net_tx_bps: float


def history_point(m: VmMetrics) -> HistoryPoint:
    """One VM's tick, summed over its disks and interfaces."""
    return HistoryPoint(
        ts=m.ts,
        cpu_percent=m.cpu_percent,
        memory_percent=m.memory_percent,
        memory_used_mb=m.memory_used_mb,
        disk_read_bps=sum(d.read_bps or 0.0 for d in m.disk_io),
        disk_write_bps=sum(d.write_bps or 0.0 for d in m.disk_io),
        net_rx_bps=sum(n.rx_bps or 0.0 for n in m.network_io),
        net_tx_bps=sum(n.tx_bps or 0.0 for n in m.network_io),
    )


@dataclass(frozen=True)
class AuditEntry:
    """One command the gateway handled: who, what, when, and the result (SPEC §7).

    `id` is the job id, so every transition of a job rewrites the same entry; a command refused
    before a job existed (400, 404, 409, 503) gets an id of its own and `result = "refused"`.
    The entry is also the job's durable record: it is written before the command is published,
    and a restarted gateway rebuilds its jobs from it (state, changed, escalated, accepted_at).
    `revised` keeps the gateway's own guess (a timeout) that the agent's real outcome replaced."""

    id: str
    ts: datetime
    by: str
    host: str | None
    vm: str | None
    name: str | None
    action: str
    params: dict[str, Any]
    result: str
    error: dict[str, Any] | None
    updated_at: datetime
    finished_at: datetime | None
    state: str | None = None
    changed: bool | None = None
    escalated: bool | None = None
    accepted_at: datetime | None = None
    revised: dict[str, Any] | None = None

    def row(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.ts.timestamp(),
            self.by,
            self.host,
            self.vm,
            self.name,
            self.action,
            json.dumps(self.params),
            self.result,
            json.dumps(self.error) if self.error is not None else None,
            self.updated_at.timestamp(),
            self.finished_at.timestamp() if self.finished_at else None,
            self.state,
            self.changed,
            self.escalated,
            self.accepted_at.timestamp() if self.accepted_at else None,
            json.dumps(self.revised) if self.revised is not None else None,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> AuditEntry:
        (id_, ts, by, host, vm, name, action, params, result, error, updated, finished) = row[:12]
        state, changed, escalated, accepted, revised = row[12:17]
        return cls(
            id=id_,
            ts=from_epoch(ts),
            by=by,
            host=host,
            vm=vm,
            name=name,
            action=action,
            params=json.loads(params),
            result=result,
            error=json.loads(error) if error else None,
            updated_at=from_epoch(updated),
            finished_at=from_epoch(finished) if finished is not None else None,
            state=state,
            changed=None if changed is None else bool(changed),
            escalated=None if escalated is None else bool(escalated),
            accepted_at=from_epoch(accepted) if accepted is not None else None,
            revised=json.loads(revised) if revised else None,
        )


def from_epoch(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)
