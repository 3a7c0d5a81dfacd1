#!/usr/bin/env python3
"""The cost of one `GET /metrics` scrape at fleet size: a gateway cache of `--hosts` × `--vms`
VMs (one disk and one NIC each, every field an agent sends), scraped the way the route does it.

No broker or agent: the cache is filled directly with the `shared` models, so the figure is the
scrape alone. Prints JSON lines: one per phase (median of `--repeat` runs), then a summary.

    .venv/bin/python benchmarks/prometheus_scrape.py [--hosts 100] [--vms 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_om

from gateway.core.state import StateCache
from gateway.web.collectors import GatewayFigures
from gateway.web.prometheus import registry
from shared.messages import (
    DiskIO,
    HostMetrics,
    HostStatus,
    MetricsBatch,
    NetIO,
    VmMetrics,
    VmState,
)

FIGURES = GatewayFigures(gateway_id="bench", mqtt_connected=True, job_counts={"succeeded": 1})


def fill(hosts: int, vms: int) -> StateCache:
    cache = StateCache()
    for h in range(hosts):
        host = f"sim-{h:04d}"
        cache.apply_host_status(HostStatus(host=host, online=True, libvirt_connected=True))
        batch = []
        for v in range(vms):
            uuid, name = f"{h:08x}-5100-4000-8000-{v:012x}", f"{host}-vm-{v:04d}"
            cache.apply_vm_state(
                VmState(
                    host=host,
                    uuid=uuid,
                    name=name,
                    state="running",
                    reason="booted",
                    is_active=True,
                    vcpus=2,
                    memory_mb=1024,
                    max_memory_mb=2048,
                    autostart=False,
                    persistent=True,
                    seq=1,
                )
            )
            batch.append(
                VmMetrics(
                    host=host,
                    uuid=uuid,
                    name=name,
                    state="running",
                    cpu_percent=12.5,
                    cpu_time_s=12345.678,
                    vcpus=2,
                    memory_used_mb=256,
                    memory_total_mb=1024,
                    disk_io=[
                        DiskIO(
                            device="vda",
                            read_bytes=123_456_789,
                            write_bytes=98_765_432,
                            read_bps=4096.0,
                            write_bps=8192.0,
                            read_reqs=30_000,
                            write_reqs=20_000,
                        )
                    ],
                    network_io=[
                        NetIO(
                            interface="vnet0",
                            rx_bytes=555_555_555,
                            tx_bytes=444_444_444,
                            rx_bps=1e3,
                            tx_bps=2e3,
                            rx_packets=400_000,
                            tx_packets=300_000,
                        )
                    ],
                    interval_s=2.0,
                )
            )
        cache.apply_metrics(
            MetricsBatch(
                host=host,
                interval_s=2.0,
                tick=1,
                host_metrics=HostMetrics(cpu_percent=10.0, cpus=64, memory_total_mb=262_144),
                vms=batch,
            )
        )
    return cache


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median CPU seconds of this process (the machine may be busy: wall time would mostly
    measure the other processes)."""
    runs, out = [], None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        runs.append(time.process_time() - t0)
    return statistics.median(runs), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--vms", type=int, default=100, help="VMs per host")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cache = fill(args.hosts, args.vms)
    n = args.hosts * args.vms
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    snap_s, snap = timed(lambda: cache.snapshot(with_metrics=True), args.repeat)
    collect_s, families = timed(lambda: list(registry(snap, FIGURES).collect()), args.repeat)
    text_s, body = timed(lambda: generate_latest(registry(snap, FIGURES)), args.repeat)
    om_s, om_body = timed(lambda: generate_om(registry(snap, FIGURES)), args.repeat)
    gzip_s, packed = timed(lambda: gzip.compress(body, compresslevel=1), args.repeat)
    samples = sum(len(f.samples) for f in families)
    del families
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    phases = {
        "snapshot (under the cache lock)": snap_s,
        "collect (families built)": collect_s,
        "text 0.0.4 (collect + render)": text_s,
        "openmetrics (collect + render)": om_s,
        "gzip level 1 of the text": gzip_s,
    }
    for phase, seconds in phases.items():
        print(json.dumps({"phase": phase, "cpu_seconds": round(seconds, 4)}))
    print(
        json.dumps(
            {
                "vms": n,
                "samples": samples,
                "scrape_cpu_seconds": round(snap_s + text_s, 3),
                "cpu_us_per_sample": round(1e6 * text_s / samples, 2),
                "body_bytes": len(body),
                "openmetrics_bytes": len(om_body),
                "gzip_bytes": len(packed),
                # Peak resident memory the scrapes added over the filled cache (KiB → MB).
                "peak_rss_growth_mb": round((rss_peak - rss_before) / 1024),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
