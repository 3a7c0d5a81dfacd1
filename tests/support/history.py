"""Metrics batches of a simulated fleet, for the gateway's history tests (unit and service)."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.messages import DiskIO, HostMetrics, MetricsBatch, NetIO, VmMetrics

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
