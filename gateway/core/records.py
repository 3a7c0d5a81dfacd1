"""What the gateway persists (history points, audit entries) and the pure rules making them."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from gateway.core.history import Agg, Tick
from gateway.core.job import Job
from gateway.errors import GatewayError
from shared.messages import ErrorInfo, utc_now

# An audit entry's `result` for a command the gateway refused before any job existed.
REFUSED = "refused"


class HistoryPoint(NamedTuple):
    """One point of a VM's history: one tick, or the average (and maximum) of `samples`
    ticks from `ts` on. Rates are summed over the VM's disks and interfaces. A tuple: an
    hour of ticks is 1,800 of them per answer."""

    ts: datetime
    cpu_percent: float | None
    memory_percent: float | None
    memory_used_mb: int | None  # whole MiB, as the seed sends memory figures
    disk_read_bps: float | None
    disk_write_bps: float | None
    net_rx_bps: float | None
    net_tx_bps: float | None
    samples: int = 1
    maxima: tuple[float | int | None, ...] = ()  # in FIELDS order


@dataclass(frozen=True)
class History:
    """What `GET /vm/<name>/history` answers: the tier the points come from (`full`: every
    tick, `1m`, `15m`) and how many seconds each point covers (None: one tick each)."""

    resolution: str
    resolution_s: float | None
    points: list[HistoryPoint]


def _mib(value: float | None) -> int | None:
    return None if value is None else round(value)


def _cents(value: float | None) -> float | None:
    # Aggregates in hundredths, rounded as the minute rows keep them: a mean of two-decimal
    # figures has a tail of digits no graph needs, and a minute reads the same before and
    # after it is written.
    return None if value is None else round(value * 100) / 100


def tick_points(ticks: list[Tick]) -> list[HistoryPoint]:
    """Ticks as they were sent: each its own maximum."""
    out = []
    for t, values in ticks:
        cpu, mem, used, rd, wr, rx, tx = values
        mib = _mib(used)
        peaks = (cpu, mem, mib, rd, wr, rx, tx)
        out.append(HistoryPoint(from_epoch(t), cpu, mem, mib, rd, wr, rx, tx, 1, peaks))
    return out


def history_points(aggs: list[Agg]) -> list[HistoryPoint]:
    """Aggregated points: averages and maxima in hundredths, memory in whole MiB."""
    out = []
    for a in aggs:
        cpu, mem, used, rd, wr, rx, tx = a.avgs()
        p = a.maxs
        peaks = (_cents(p[0]), _cents(p[1]), _mib(p[2]), *(_cents(x) for x in p[3:]))
        out.append(
            HistoryPoint(
                from_epoch(a.t),
                _cents(cpu),
                _cents(mem),
                _mib(used),
                _cents(rd),
                _cents(wr),
                _cents(rx),
                _cents(tx),
                a.n,
                peaks,
            )
        )
    return out


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


# A job's fields and the audit entry's that keep them: the entry is the job's durable record,
# so each fact of the job has its place in it (`created_at` is the entry's `ts`, `status` its
# `result`). Both ways below read this one mapping.
JOB_TO_AUDIT: dict[str, str] = {
    **{
        name: name
        for name in (
            "id",
            "by",
            "host",
            "vm",
            "name",
            "action",
            "params",
            "error",
            "updated_at",
            "finished_at",
            "state",
            "changed",
            "escalated",
            "accepted_at",
            "revised",
        )
    },
    "created_at": "ts",
    "status": "result",
}


def audit_of(job: Job) -> AuditEntry:
    return AuditEntry(**{entry: getattr(job, name) for name, entry in JOB_TO_AUDIT.items()})


def job_of(entry: AuditEntry) -> Job:
    """A job again, from its audit entry (a gateway restart, or one older than memory)."""
    fields = {name: getattr(entry, field) for name, field in JOB_TO_AUDIT.items()}
    for name in ("host", "vm", "name"):  # a job always has them; only a refusal may not
        fields[name] = fields[name] or ""
    return Job(**fields)


def refusal(ref: str, host: str | None, verb: str, by: str, exc: GatewayError) -> AuditEntry:
    """A command turned down before it became a job: still who, what, when and why."""
    now = utc_now()
    return AuditEntry(
        id=uuid.uuid4().hex,
        ts=now,
        by=by,
        host=host,
        vm=None,
        name=ref,
        action=verb,
        params={},
        result=REFUSED,
        error=ErrorInfo(code=exc.code, message=exc.message).model_dump(),
        updated_at=now,
        finished_at=now,
    )
