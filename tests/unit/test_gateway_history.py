"""Metrics history: minutes packed in memory, one row per VM-minute on a real SQLite file,
15-minute rollups, retention bounds over a simulated day, `points=` downsampling."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.core.history import Agg, Tail, at_most, ticks_at_most
from shared.messages import DiskIO, HostMetrics, MetricsBatch, NetIO, VmMetrics

pytestmark = pytest.mark.unit

HOST = "h"
# A day of 15-minute quarters ago, on a quarter boundary: every simulated minute is whole.
T0 = (int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) // 900) * 900


def uuid(i: int) -> str:
    return f"a0000000-0000-4000-8000-{i:012d}"


def vm(i: int, ts: float, cpu: float | None, tick: int) -> VmMetrics:
    # model_construct: a simulated day is ~10^5 of these, validation is the ingest's job.
    return VmMetrics.model_construct(
        host=HOST,
        uuid=uuid(i),
        name=f"vm{i}",
        state="running",
        cpu_percent=cpu,
        vcpus=1,
        memory_percent=12.34,
        memory_used_mb=1000 + i,
        memory_total_mb=4096,
        ts=datetime.fromtimestamp(ts, UTC),
        disk_io=[DiskIO.model_construct(device="vda", read_bps=100.25 * i, write_bps=None)],
        network_io=[
            NetIO.model_construct(interface="vnet0", rx_bps=12_345_678.91, tx_bps=2.0 * (tick % 2))
        ],
    )


def batch(ts: float, vms: list[VmMetrics]) -> MetricsBatch:
    return MetricsBatch.model_construct(
        host=HOST,
        interval_s=2.0,
        tick=0,
        host_metrics=HostMetrics(),
        vms=vms,
        ts=datetime.fromtimestamp(ts, UTC),
    )


def test_the_tail_ends_a_minute_when_the_next_begins_and_packs_nulls() -> None:
    tail = Tail()
    assert tail.add(batch(T0, [vm(0, T0, None, 0)])) == []
    assert tail.add(batch(T0 + 58, [vm(0, T0 + 58, 7.5, 1)])) == []
    closed = tail.add(batch(T0 + 60, [vm(0, T0 + 60, 1.0, 2)]))
    assert [(key, m.minute, len(m)) for key, m in closed] == [((HOST, uuid(0)), T0 // 60, 2)]
    summary = closed[0][1].summary()
    assert (summary.n, summary.avgs()[0], summary.maxs[0]) == (2, 7.5, 7.5)  # null not counted
    assert tail.counts() == (1, 1)
    tail.forget(closed)
    assert tail.counts() == (1, 0)
    assert [len(m) for m in tail.of((HOST, uuid(0)))] == [1]
    assert [m.minute for _, m in tail.sweep(T0 // 60 + 2)] == [T0 // 60 + 1]


def test_at_most_keeps_the_average_and_the_maximum_of_each_interval() -> None:
    points = [Agg.of(T0 + s, [float(s), None, 1.0, 0.0, 0.0, 0.0, 0.0]) for s in range(100)]
    merged = at_most(points, 7, T0, T0 + 99)
    assert len(merged) <= 7
    assert sum(p.n for p in merged) == 100
    assert merged[-1].maxs[0] == 99.0 and merged[0].avgs()[1] is None
    assert at_most(points, 100, T0, T0 + 99) is points
    assert len(at_most(points, 1, T0, T0 + 99)) == 1
    ticks = [(T0 + s, (float(s), None, 1.0, 0.0, 0.0, 0.0, 0.0)) for s in range(100)]
    same = ticks_at_most(ticks, 7, T0, T0 + 99)
    assert [(p.t, p.n, p.sums, p.counts, p.maxs) for p in same] == [
        (p.t, p.n, p.sums, p.counts, p.maxs) for p in merged
    ]
