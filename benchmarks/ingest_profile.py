#!/usr/bin/env python3
"""The gateway's ingest path in one process, without a broker: where does its CPU go?

Builds and starts the whole app (`create_app`, `start`: cache, store, Socket.IO bridge, the
bus with its ingest thread) with the MQTT URL on a port nothing listens on, loads H hosts x V VMs of
`benchmarks/simulate_hosts.py` (statuses, retained states), then hands the bus T ticks of
metrics batches rendered by the simulator's own templates, as paho's thread would, and waits
until the ingest thread, the history writer and the Socket.IO bridge have got through them.
Prints one JSON line: VM metrics per CPU-second of the whole process (every thread counts);
with `--profile`, cProfile's top functions of the ingest thread too.

    .venv/bin/python benchmarks/ingest_profile.py [--hosts 100] [--vms 100] [--ticks 10]
        [--profile] [--top 30]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.simulate_hosts import Fleet, SimHost, Stats  # noqa: E402
from gateway import create_app, start  # noqa: E402
from gateway.config import Settings  # noqa: E402
from gateway.service import Gateway  # noqa: E402
from shared.messages import dump  # noqa: E402
from shared.topics import Topics  # noqa: E402
from tests.support.ports import free_port  # noqa: E402


def feed(gw: Gateway, items: list[tuple[str, bytes, bool, bytes | None]]) -> None:
    """Hand raw messages to the bus as paho's thread does (waits when the inbox is full)."""
    bus: Any = gw.bus
    deliver = getattr(bus, "deliver", None)
    for topic, payload, retained, corr in items:
        if deliver is None:
            bus._inbox.put((topic, payload, retained, corr))  # the seed's queue.Queue
            continue
        deliver(topic, payload, retained, corr)


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def drained(gw: Gateway, timeout: float = 300.0) -> None:
    """Until the ingest took every queued message (polled: a few wake-ups per tick)."""
    bus: Any = gw.bus
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inbox = getattr(bus, "_inbox", None)
        if inbox is None or inbox.qsize() == 0:
            return
        time.sleep(0.005)
    raise RuntimeError("the ingest did not drain its inbox")


def settled(gw: Gateway, expect: int, timeout: float = 300.0) -> None:
    """Until the cache holds `expect` metrics and the writer and the bridge are idle."""
    deadline = time.monotonic() + timeout
    bus: Any = gw.bus
    while time.monotonic() < deadline:
        inbox = getattr(bus, "_inbox", None)
        pending = inbox.qsize() if inbox is not None and hasattr(inbox, "qsize") else 0
        pending += getattr(bus, "pending", lambda: 0)()
        if pending == 0 and gw.store.flush(60):
            return
        time.sleep(0.01)
    raise RuntimeError(f"the ingest did not settle ({expect} expected)")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each Python thread of this process, by name (from /proc)."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[t.name] = out.get(t.name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="cProfile the ingest thread")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-gc", action="store_true", help="gc.disable() (an experiment)")
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="store.add_metrics does nothing: the share of the history writes (an experiment)",
    )
    parser.add_argument("--gc-threshold", type=int, nargs=3, help="gc.set_threshold (experiment)")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() (experiment)")
    parser.add_argument(
        "--inline",
        action="store_true",
        help="also apply the ticks once more on this thread, no queue: the path's own CPU",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kvmsup-ingest-prof-"))
    settings = Settings(
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",
        gateway_id="prof",
        auth="none",
        db=str(work / "gw.db"),
    )
    app = create_app(settings)
    gw: Gateway = start(app)
    inbox = getattr(gw.bus, "_inbox", None)
    if hasattr(inbox, "metrics_max_bytes"):
        # Nothing shed, nothing refused: this measures the cost of applying all of it.
        inbox.maxsize = inbox.metrics_max_bytes = 1 << 40  # type: ignore[union-attr]
    fleet = Fleet(args.hosts, args.vms, 2.0)
    topics = Topics(fleet.prefix)
    stats = Stats()
    hosts = [SimHost(fleet, h, topics, stats) for h in range(args.hosts)]
    load: list[tuple[str, bytes, bool, bytes | None]] = []
    for host in hosts:
        load.append((topics.host_status(host.host), dump(host.status(True)), True, None))
        for uuid, state in host.vms.items():
            load.append((topics.vm_state(host.host, uuid), dump(state), True, None))
    feed(gw, load)
    settled(gw, 0)

    now = time.time()
    ticks = [
        (topics.host_metrics(h.host), h.template.render(t + 1, now + t * 2), False, None)
        for t in range(args.ticks)
        for h in hosts
    ]
    vm_metrics = args.ticks * args.hosts * args.vms

    # CPU time of the profiled thread, not wall time: other work on the machine would count.
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    if profiler is not None:
        # cProfile sees one thread: the ingest thread's, installed from inside it.
        bus: Any = gw.bus
        handler = bus.handler

        def profiled(model: Any) -> None:
            profiler.runcall(handler, model)

        bus.handler = profiled
        original_decode = sys.modules["gateway.adapters.bus"].decode

        def decode(*a: Any, **kw: Any) -> Any:
            return profiler.runcall(original_decode, *a, **kw)

        sys.modules["gateway.adapters.bus"].decode = decode

    if args.no_gc:
        gc.disable()
    if args.no_history:
        gw.store.add_metrics = lambda _batch: None  # type: ignore[method-assign]
    if args.gc_threshold:
        gc.set_threshold(*args.gc_threshold)
    if args.gc_freeze:
        gc.freeze()
    gc_time = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_time[0] = time.perf_counter()
        else:
            gc_time[1] += time.perf_counter() - gc_time[0]

    gc.callbacks.append(on_gc)
    threads0 = thread_cpu()
    cpu0, wall0 = time.process_time(), time.monotonic()
    for t in range(args.ticks):
        # One tick at a time, as agents send them: a newer batch of a host queued behind an
        # older one would supersede it (shed unapplied), which is not what is measured here.
        feed(gw, ticks[t * args.hosts : (t + 1) * args.hosts])
        drained(gw)
    settled(gw, vm_metrics)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    threads = {k: round(v - threads0.get(k, 0.0), 2) for k, v in thread_cpu().items()}
    out = {
        "figure": "ingest_in_process",
        "cores": os.cpu_count(),
        "hosts": args.hosts,
        "vms": args.hosts * args.vms,
        "vm_metrics": vm_metrics,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "vm_metrics_per_cpu_s": round(vm_metrics / cpu),
        "profiled": bool(profiler),
        "rss_kb": rss_kb(),
        "gc_wall_s": round(gc_time[1], 3),
        "gc_threshold": gc.get_threshold(),
        "thread_cpu_s": {k: v for k, v in threads.items() if v > 0},
        "drops": {k: v for k, v in gw.drops.counts().items() if v},
    }
    if args.inline and hasattr(gw.bus, "_ingest_one"):
        cpu0 = time.thread_time()
        for item in ticks:
            gw.bus._ingest_one(item)
        inline = time.thread_time() - cpu0
        out["inline_ingest_cpu_s"] = round(inline, 3)
        out["inline_vm_metrics_per_cpu_s"] = round(vm_metrics / inline)
        settled(gw, vm_metrics)
    print(json.dumps(out), flush=True)
    if profiler is not None:
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(args.top)
        print(buf.getvalue())
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(args.top)
        print(buf.getvalue())
    gw.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
