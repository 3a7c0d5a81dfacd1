#!/usr/bin/env python3
"""Gateway ingest: VM metrics per gateway CPU-second, and GET /vms latency while ingesting.

A real Mosquitto, the gateway as deployed (`python -m gateway`: gunicorn, one worker) and
`benchmarks/simulate_hosts.py` for H hosts x V VMs sending one batch per host per interval
(default 100 x 100 every 0.4 s: 10,000 VMs, 25,000 VM metrics/s). After the fleet is loaded and
a warm-up:

- ingest (`--duration` s, no REST client): vm_metrics_per_cpu_s = VM metrics the gateway
  applied to its cache in the window (its own /health `metrics_applied` counter) / CPU seconds
  of the gateway worker (utime + stime of /proc/<pid>/stat; the worker is the gunicorn master's
  child). Target >= 50,000.
- GET /vms p50/p99 (`--read-duration` s) from one client doing sequential requests with a
  token, while the simulator keeps sending. Target p99 < 100 ms for 10,000 VMs while ingesting
  25,000 VM metrics/s. Then GET /stats/summary the same way (`--other-reads` s).
- every figure carries what says the gateway fell behind in its window: metrics batches shed
  unparsed (`ingest_behind` drops), batches and VM metrics applied late (older than two
  intervals), messages refused by a full inbox; `freshness` is the age of the cached metrics of
  sampled VMs; `gateway_worker` its RSS and every such counter of /health and /metrics.

Prints JSON lines, with the machine's core count and load average (other work on the machine
shows in the figures).

    .venv/bin/python benchmarks/gateway_ingest.py [--hosts 100] [--vms 100] [--interval 0.4]
        [--duration 20] [--read-duration 15] [--other-reads 5] [--warmup 5] [--sim-processes 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from benchmarks.simulate_hosts import Fleet  # noqa: E402
from shared.messages import utc_now  # noqa: E402
from tests.support.broker import Broker  # noqa: E402
from tests.support.gateway import GatewayProc  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
COUNTER_RE = re.compile(r"ingest|drop|late|lag|queue|behind|applied", re.IGNORECASE)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


def worker_pid(pid: int, timeout: float = 20.0) -> int:
    """gunicorn's worker (the master's only child) serves the gateway: measure that one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("the gateway's gunicorn worker did not start")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "VmRSS":
            out["rss_kb"] = int(value.split()[0])
        elif key == "Threads":
            out["os_threads"] = int(value)
    return out


def gateway_proc(work: Path, broker_url: str, threads: int) -> GatewayProc:
    """The gateway as deployed; `threads` 0 keeps its default."""
    if threads:
        return GatewayProc(work, broker_url, gateway_id="bench", KVMSUP_THREADS=str(threads))
    return GatewayProc(work, broker_url, gateway_id="bench")


class Api:
    """A keep-alive HTTP client of the gateway with the viewer token, its own timeout per call."""

    def __init__(self, gw: GatewayProc) -> None:
        self.url = gw.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {gw.tokens.viewer}"

    def get(self, path: str, timeout: float = 10.0) -> requests.Response:
        return self.session.get(self.url + path, timeout=timeout)


class Simulator:
    """`simulate_hosts.py` as a child process; its cumulative JSON lines are read on a thread."""

    def __init__(self, broker_url: str, args: argparse.Namespace, log: Path) -> None:
        cmd = [
            sys.executable,
            str(ROOT / "benchmarks" / "simulate_hosts.py"),
            "--broker",
            broker_url,
            "--hosts",
            str(args.hosts),
            "--vms",
            str(args.vms),
            "--interval",
            str(args.interval),
            "--processes",
            str(args.sim_processes),
        ]
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self.latest: dict[str, Any] = {}
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if data.get("ready"):
                    self.ready.set()
                else:
                    self.latest = data

    def wait_ready(self, timeout: float) -> None:
        if not self.ready.wait(timeout):
            raise RuntimeError(f"the simulator did not connect every host within {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def wait_vms(gw: Api, count: int, timeout: float) -> float:
    """Seconds until GET /vms lists `count` VMs (the retained states reached the cache)."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        with contextlib.suppress(requests.RequestException, ValueError):
            last = gw.get("/vms", timeout=10).json().get("count")
            if last == count:
                return time.monotonic() - start
        time.sleep(0.5)
    raise RuntimeError(f"the gateway listed {last} VMs, not {count}, after {timeout}s")


class Poller(threading.Thread):
    """One client doing sequential GETs of one path, timing each."""

    def __init__(self, gw: GatewayProc, path: str, timeout: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.api, self.path, self.timeout = Api(gw), path, timeout
        self.latencies: list[float] = []
        self.errors = 0
        self.timeouts = 0
        self.bytes = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            t0 = time.perf_counter()
            try:
                resp = self.api.get(self.path, timeout=self.timeout)
                ok = resp.status_code == 200
                self.bytes = len(resp.content)
            except requests.Timeout:
                self.timeouts += 1
                ok = False
            except requests.RequestException:
                ok = False
            if ok:
                self.latencies.append(time.perf_counter() - t0)
            else:
                self.errors += 1
                time.sleep(0.1)

    def figures(self) -> dict[str, Any]:
        lat = [x * 1000 for x in self.latencies]
        if not lat:
            return {"ok": 0, "errors": self.errors, "timeouts": self.timeouts}
        return {
            "ok": len(lat),
            "errors": self.errors,
            "timeouts": self.timeouts,
            "p50_ms": round(percentile(lat, 50), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(max(lat), 2),
            "body_bytes": self.bytes,
        }


def freshness(gw: Api, fleet: Fleet, samples: int) -> dict[str, Any]:
    """Age of the cached metrics of VMs spread over the fleet: a gateway keeping up serves
    figures at most about one interval old."""
    lags: list[float] = []
    missing = 0
    step = max(1, fleet.hosts * fleet.vms // samples)
    names = fleet.names()[::step][:samples]
    for name in names:
        try:
            body = gw.get(f"/vm/{name}/metrics", timeout=10).json()
        except (requests.RequestException, ValueError):
            missing += 1
            continue
        if not body.get("ts"):
            missing += 1
            continue
        ts = body["ts"].replace("Z", "+00:00")
        from datetime import datetime

        lags.append((utc_now() - datetime.fromisoformat(ts)).total_seconds() * 1000)
    out: dict[str, Any] = {"sampled": len(names), "without_metrics": missing}
    if lags:
        out |= {
            "lag_p50_ms": round(percentile(lags, 50), 1),
            "lag_max_ms": round(max(lags), 1),
            # One interval plus scheduling slack: older means the gateway fell behind or dropped.
            "keeps_up": max(lags) < fleet.interval * 1000 + 1500 and missing == 0,
        }
    return out


def counters(gw: Api, scrape: bool = True) -> dict[str, Any]:
    """Whatever the gateway exports about ingest, drops and lateness, in /health and (when
    `scrape`: it renders every VM, so never inside a measured window) /metrics."""
    found: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif COUNTER_RE.search(prefix) and not isinstance(value, list):
            found[f"health:{prefix}"] = value

    with contextlib.suppress(requests.RequestException, ValueError):
        walk("", gw.get("/health", timeout=10).json())
    with contextlib.suppress(requests.RequestException):
        for line in gw.get("/metrics", timeout=60).text.splitlines() if scrape else []:
            name = line.split("{")[0].split(" ")[0]
            if name.startswith("kvmsup_gateway_") and COUNTER_RE.search(name):
                series, _, value = line.rpartition(" ")
                found[f"metrics:{series}"] = float(value)
    return found


def deltas(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v - before[k]
        for k, v in after.items()
        if isinstance(v, int | float) and isinstance(before.get(k), int | float)
    }


def behind(counts: dict[str, Any]) -> dict[str, Any]:
    """The counters that say the gateway fell behind: batches shed unparsed (a drop reason),
    batches (and their VM metrics) applied late, other messages refused by a full inbox."""
    return {
        "batches_shed": counts.get("health:messages_dropped.ingest_behind"),
        "batches_late": counts.get("health:metrics_late.batches"),
        "vm_metrics_late": counts.get("health:metrics_late.vm_metrics"),
        "inbox_full": counts.get("health:messages_dropped.inbox_full"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100, help="simulated hosts")
    parser.add_argument("--vms", type=int, default=100, help="VMs per host")
    parser.add_argument(
        "--interval", type=float, default=0.4, help="seconds between batches (0.4: 25,000/s)"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="ingest window, seconds")
    parser.add_argument(
        "--read-duration", type=float, default=15.0, help="GET /vms window, seconds"
    )
    parser.add_argument(
        "--other-reads", type=float, default=5.0, help="GET /stats/summary window, seconds"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--sim-processes", type=int, default=2, help="simulator processes")
    parser.add_argument("--threads", type=int, default=0, help="gateway threads (0: default)")
    parser.add_argument("--samples", type=int, default=30, help="VMs checked for freshness")
    parser.add_argument("--load-timeout", type=float, default=120.0, help="fleet load deadline")
    args = parser.parse_args()

    fleet = Fleet(args.hosts, args.vms, args.interval)
    work = Path(tempfile.mkdtemp(prefix="kvmsup-ingest-"))
    broker = Broker(work)
    gw = gateway_proc(work, broker.url, args.threads)
    sim: Simulator | None = None
    common = {"cores": os.cpu_count(), "hosts": args.hosts, "vms": args.hosts * args.vms}
    try:
        broker.start()
        gw.start()
        worker = worker_pid(gw.service.pid)
        t0 = time.monotonic()
        sim = Simulator(broker.url, args, work / "simulator.log")
        sim.wait_ready(args.load_timeout)
        api = Api(gw)
        load_s = wait_vms(api, args.hosts * args.vms, args.load_timeout)
        print(
            json.dumps(
                {
                    "figure": "fleet_loaded",
                    **common,
                    "seconds": round(time.monotonic() - t0, 2),
                    "after_sim_ready_s": round(load_s, 2),
                    "gateway_cpu_s": round(cpu_seconds(worker), 2),
                }
            ),
            flush=True,
        )
        time.sleep(args.warmup)

        # Ingest alone first: the CPU of a GET /vms client must not count as ingest.
        lag0 = freshness(api, fleet, args.samples).get("lag_p50_ms")
        health0 = counters(api, scrape=False)
        sent0, cpu0, w0 = dict(sim.latest), cpu_seconds(worker), time.monotonic()
        load0 = os.getloadavg()[0]
        time.sleep(args.duration)
        sent1, cpu1, w1 = dict(sim.latest), cpu_seconds(worker), time.monotonic()
        health1 = counters(api, scrape=False)
        lag1 = freshness(api, fleet, args.samples).get("lag_p50_ms")
        moved = deltas(health0, health1)
        elapsed = w1 - w0
        metrics = sent1["vm_metrics"] - sent0["vm_metrics"]
        cpu = cpu1 - cpu0
        # What reached the cache, as the gateway counts it (/health metrics_applied); shed
        # batches are never parsed and are not in it.
        applied = moved.get("health:metrics_applied.vm_metrics")
        print(
            json.dumps(
                {
                    "figure": "ingest",
                    **common,
                    "interval_s": args.interval,
                    "window_s": round(elapsed, 1),
                    "vm_metrics_sent": metrics,
                    "vm_metrics_per_s": round(metrics / elapsed),
                    "vm_metrics_applied": applied,
                    "gateway_cpu_s": round(cpu, 2),
                    "gateway_cpu_share": round(cpu / elapsed, 2),
                    "vm_metrics_per_cpu_s": round(applied / cpu) if applied and cpu > 0 else None,
                    "target": ">= 50000",
                    **behind(moved),
                    "lag_p50_ms": [lag0, lag1],
                    "sim_cpu_s": round(sent1["sim_cpu_s"] - sent0["sim_cpu_s"], 2),
                    "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
                }
            ),
            flush=True,
        )

        for path, window in (("/vms", args.read_duration), ("/stats/summary", args.other_reads)):
            if window <= 0:
                continue
            poller = Poller(gw, path)
            health0 = counters(api, scrape=False)
            sent0, w0 = dict(sim.latest), time.monotonic()
            poller.start()
            time.sleep(window)
            poller.halt.set()
            poller.join(timeout=15)
            sent1, w1 = dict(sim.latest), time.monotonic()
            moved = deltas(health0, counters(api, scrape=False))
            rate = (sent1["vm_metrics"] - sent0["vm_metrics"]) / (w1 - w0)
            print(
                json.dumps(
                    {
                        "figure": f"GET {path}",
                        **common,
                        "while_vm_metrics_per_s": round(rate),
                        **poller.figures(),
                        "target_p99_ms": 100 if path == "/vms" else None,
                        **behind(moved),
                        "loadavg_1m": round(os.getloadavg()[0], 2),
                    }
                ),
                flush=True,
            )
        print(
            json.dumps({"figure": "freshness", **common, **freshness(api, fleet, args.samples)}),
            flush=True,
        )
        # RSS before the /metrics scrape (rendering every VM's series is a peak of its own,
        # and freed memory is seldom given back), then after it.
        status = proc_status(worker)
        totals = counters(api)
        print(
            json.dumps(
                {
                    "figure": "gateway_worker",
                    **common,
                    **status,
                    "rss_kb_after_metrics_scrape": proc_status(worker)["rss_kb"],
                    "gateway_cpu_s_total": round(cpu_seconds(worker), 2),
                    **behind(totals),
                    "counters": totals,
                }
            ),
            flush=True,
        )
    finally:
        if sim is not None:
            sim.stop()
        gw.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
