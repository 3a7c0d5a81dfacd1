#!/usr/bin/env python3
"""Metrics history at fleet scale: rows, bytes, memory and CPU of one hour (or more) of
10,000 VMs at a 2 s tick, written through the gateway's real write path.

A `gateway.adapters.store.Store` on a real file takes `add_metrics(MetricsBatch)` exactly as the
ingest calls it (H hosts x V VMs a tick), under a simulated clock that moves 2 s a tick, as
fast as the machine goes: its writer thread commits the minute rows, rolls quarters up and
prunes by that clock. The feeder waits for the writer once a simulated minute (a real
gateway's writer has the whole minute), so nothing is dropped. Building the pydantic models
is not the store's cost: each VM's model is built once and its figures rewritten every
tick, and that is measured apart.

Prints JSON lines: one per simulated hour (rows per table, DB bytes, RSS), then the totals:
write CPU-seconds per 10,000 VM points (the ingest side, `add_metrics`, and the writer
thread), and read latency of one VM's history (an hour of ticks, a day of minutes, and either
cut to 300 points), with the machine's core count and load average.

    .venv/bin/python benchmarks/history_size.py [--hosts 100] [--vms 100] [--hours 1]
        [--interval 2] [--reads 50] [--db PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.adapters.store import Store  # noqa: E402
from shared.messages import DiskIO, HostMetrics, MetricsBatch, NetIO, VmMetrics  # noqa: E402

TABLES = ("history_ticks", "history_1m", "history_15m", "history_vms")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def uuid(h: int, v: int) -> str:
    return f"{h:08x}-0000-4000-8000-{v:012x}"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def rows(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        db.close()


class Fleet:
    """Every VM's model built once; each tick rewrites its figures in place. The store only
    reads a batch while `add_metrics` runs, and building 10,000 pydantic models a tick would
    cost more than the store itself (the ingest parses them once, that is its own budget)."""

    def __init__(self, hosts: int, vms: int) -> None:
        when = datetime.now(UTC)
        self.batches = []
        for h in range(hosts):
            host = f"host-{h:03d}"
            entries = [
                VmMetrics.model_construct(
                    host=host,
                    uuid=uuid(h, v),
                    name=f"vm-{h}-{v}",
                    state="running",
                    vcpus=2,
                    memory_total_mb=2048,
                    ts=when,
                    disk_io=[DiskIO.model_construct(device="vda", read_bytes=0, write_bytes=0)],
                    network_io=[NetIO.model_construct(interface="vnet0", rx_bytes=0, tx_bytes=0)],
                )
                for v in range(vms)
            ]
            self.batches.append(
                MetricsBatch.model_construct(
                    host=host,
                    interval_s=2.0,
                    tick=0,
                    host_metrics=HostMetrics(),
                    vms=entries,
                    ts=when,
                )
            )

    def tick(self, ts: float, k: int, rng: random.Random) -> list[MetricsBatch]:
        """The next tick of every VM, figures rounded as an agent rounds them."""
        when = datetime.fromtimestamp(ts, UTC)
        rand = rng.random
        for b in self.batches:
            b.__dict__["ts"] = when
            for v, m in enumerate(b.vms):
                m.__dict__.update(
                    ts=when,
                    cpu_percent=round(rand() * 100, 2),
                    memory_percent=round(20 + (k + v) % 50 + 0.25, 2),
                    memory_used_mb=512 + (k + v) % 256,
                )
                m.disk_io[0].__dict__.update(
                    read_bps=round(rand() * 5e7, 2), write_bps=round(rand() * 1e6, 2)
                )
                m.network_io[0].__dict__.update(
                    rx_bps=round(rand() * 1e6, 2), tx_bps=round(rand() * 1e5, 2)
                )
        return self.batches


def read_latency(store: Store, args: argparse.Namespace, minutes: float, points: int | None):
    rng = random.Random(7)
    samples, count = [], 0
    for _ in range(args.reads):
        h, v = rng.randrange(args.hosts), rng.randrange(args.vms)
        t0 = time.perf_counter()
        got = store.history(f"host-{h:03d}", uuid(h, v), minutes, points)
        samples.append((time.perf_counter() - t0) * 1000)
        count = len(got.points)
    samples.sort()
    return {
        "minutes": minutes,
        "points_arg": points,
        "points": count,
        "resolution": got.resolution,
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[min(len(samples) - 1, int(0.99 * len(samples)))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--vms", type=int, default=100, help="VMs per host")
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds per tick")
    parser.add_argument("--reads", type=int, default=50, help="history reads per kind")
    parser.add_argument("--db", type=Path, default=None, help="file (default: a temp dir)")
    args = parser.parse_args()

    path = args.db or Path(tempfile.mkdtemp(prefix="kvmsup-hist-")) / "gateway.db"
    fleet = args.hosts * args.vms
    ticks = int(args.hours * 3600 / args.interval)
    per_minute = max(1, int(60 / args.interval))
    clock = Clock((time.time() // 900) * 900 - args.hours * 3600)
    rss_before = rss_mib()
    store = Store(str(path), 60, 90, clock=clock)
    store.start()
    rng = random.Random(1)
    sim = Fleet(args.hosts, args.vms)
    rss_models = rss_mib()  # the benchmark's own models, not the store's
    build_cpu = add_cpu = 0.0
    cpu0, main0, wall0 = time.process_time(), time.thread_time(), time.monotonic()
    for k in range(ticks):
        ts = clock.t
        t0 = time.thread_time()
        batches = sim.tick(ts, k, rng)
        t1 = time.thread_time()
        for b in batches:
            store.add_metrics(b)
        add_cpu += time.thread_time() - t1
        build_cpu += t1 - t0
        clock.t = ts + args.interval
        if (k + 1) % per_minute == 0:
            store.flush(600)  # the writer's minute: a live gateway gives it 60 s
        if (k + 1) % (3600 // int(args.interval)) == 0:
            print(
                json.dumps(
                    {
                        "simulated_hours": round((k + 1) * args.interval / 3600, 2),
                        "vms": fleet,
                        "rows": rows(path),
                        "db_bytes": db_bytes(path),
                        "rss_mib": round(rss_mib(), 1),
                        "wall_s": round(time.monotonic() - wall0, 1),
                    }
                ),
                flush=True,
            )
    store.flush(600)
    total_cpu = time.process_time() - cpu0
    main_cpu = time.thread_time() - main0
    writer_cpu = total_cpu - main_cpu  # the writer is the only other thread
    points = ticks * fleet
    drops = store.drops.counts()
    rss_filled = rss_mib()
    tail_counts = store.minutes_in_memory()
    reads = [
        read_latency(store, args, 60, None),
        read_latency(store, args, 60, 300),
        read_latency(store, args, 24 * 60, None),
        read_latency(store, args, 24 * 60, 300),
    ]
    store.stop()
    load = os.getloadavg()
    print(
        json.dumps(
            {
                "benchmark": "history_size",
                "cores": os.cpu_count(),
                "loadavg": [round(x, 2) for x in load],
                "vms": fleet,
                "interval_s": args.interval,
                "simulated_hours": args.hours,
                "vm_points": points,
                "rows": rows(path),
                "db_bytes": db_bytes(path),
                "db_bytes_per_vm_hour": round(db_bytes(path) / fleet / args.hours),
                "rss_mib_before": round(rss_before, 1),
                "rss_mib_fleet_models": round(rss_models - rss_before, 1),
                "rss_mib_filled": round(rss_filled, 1),
                "tail_minutes_open_pending": list(tail_counts),
                "rss_mib_peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "add_cpu_s_per_10k_points": round(add_cpu / points * 10_000, 4),
                "writer_cpu_s_per_10k_points": round(writer_cpu / points * 10_000, 4),
                "write_cpu_s_per_10k_points": round((add_cpu + writer_cpu) / points * 10_000, 4),
                "figures_cpu_s_per_10k_points": round(build_cpu / points * 10_000, 4),
                "wall_s": round(time.monotonic() - wall0, 1),
                "drops": drops,
                "reads": reads,
                "threads": threading.active_count(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
