#!/usr/bin/env python3
"""Soak: the whole stack for N minutes under steady churn; RSS, threads and fds must stay flat.

A real Mosquitto, two agents on libvirt's test driver (the demo node files, metrics every
second), and the gateway with tokens. Meanwhile: a REST command every few seconds (suspend and
resume in turn, on both hosts), Socket.IO clients connecting, asking for the VM list and leaving,
and the broker killed (-9) and restarted on the same port every few minutes. Each minute prints
one JSON line per process (rss_kb, threads, fds); the last line compares each process's figures
at the end with the first sample after the warm-up.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--broker-restart-every 180]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.broker import Broker  # noqa: E402
from tests.support.gateway import GatewayProc  # noqa: E402
from tests.support.procs import agent_service, demo_node_uri  # noqa: E402

# (host, VM name) pairs commanded in turn: one running VM per demo host.
TARGETS = (("demo-a", "web-01"), ("demo-b", "shared-vm"))


def worker_pid(pid: int) -> int:
    """gunicorn's worker (the master's only child) serves the gateway: measure that one."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pid
    return int(children[0]) if children else pid


def proc_figures(pid: int) -> dict[str, int]:
    """RSS (KiB), thread count and open file descriptors of a live process, from /proc."""
    figures = {"rss_kb": -1, "threads": -1, "fds": -1}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "VmRSS":
                figures["rss_kb"] = int(value.split()[0])
            elif key == "Threads":
                figures["threads"] = int(value.strip())
        figures["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return figures


class Counters:
    """What the churn threads did, so a flat line is not a line of nothing happening."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, int] = {}

    def add(self, key: str) -> None:
        with self.lock:
            self.values[key] = self.values.get(key, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.values)


def command_loop(gw: GatewayProc, stop: threading.Event, every: float, counts: Counters) -> None:
    turn = 0
    while not stop.wait(every):
        host, name = TARGETS[turn % len(TARGETS)]
        action = "suspend" if (turn // len(TARGETS)) % 2 == 0 else "resume"
        turn += 1
        try:
            resp = gw.post(f"/vm/{name}/{action}?host={host}&wait=5", json={})
            status = resp.json().get("status") if resp.status_code in (200, 202) else None
            counts.add(f"command_{resp.status_code}_{status}")
        except Exception as exc:  # the broker may be restarting: count it, keep going
            counts.add(f"command_error_{type(exc).__name__}")


def socketio_loop(gw: GatewayProc, stop: threading.Event, counts: Counters) -> None:
    rng = random.Random(7)
    while not stop.wait(rng.uniform(0.2, 1.0)):
        try:
            client = gw.sio("viewer")
            try:
                client.call("request_vms_list", timeout=10)
                if rng.random() < 0.5:
                    client.call("subscribe_metrics", {"name": "*"}, timeout=10)
                    time.sleep(rng.uniform(0.5, 2.0))
            finally:
                client.close()
            counts.add("socketio_sessions")
        except Exception as exc:
            counts.add(f"socketio_error_{type(exc).__name__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--broker-restart-every", type=float, default=180.0, help="seconds")
    parser.add_argument("--command-every", type=float, default=3.0, help="seconds")
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes before the baseline")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kvmsup-soak-") as tmpname:
        tmp = Path(tmpname)
        broker = Broker(tmp)
        broker.start()
        agents = [
            agent_service(
                tmp, host, broker.url, demo_node_uri(host), KVMSUP_METRICS_INTERVAL="1"
            ).start()
            for host in ("demo-a", "demo-b")
        ]
        gw = GatewayProc(tmp, broker.url, gateway_id="gw-soak").start()
        stop = threading.Event()
        counts = Counters()
        threads = [
            threading.Thread(
                target=command_loop, args=(gw, stop, args.command_every, counts), daemon=True
            ),
            threading.Thread(target=socketio_loop, args=(gw, stop, counts), daemon=True),
        ]
        for thread in threads:
            thread.start()
        processes: dict[str, Any] = {
            "broker": lambda: broker.proc.pid if broker.proc else -1,
            "gateway": lambda: worker_pid(gw.service.pid),
            "agent-demo-a": lambda: agents[0].pid,
            "agent-demo-b": lambda: agents[1].pid,
        }
        samples: list[dict[str, Any]] = []
        start = time.monotonic()
        end = start + args.minutes * 60
        next_sample = start + args.sample_every
        next_restart = start + args.broker_restart_every
        restarts = 0
        try:
            while time.monotonic() < end:
                time.sleep(0.5)
                now = time.monotonic()
                if now >= next_restart:
                    broker.restart()
                    restarts += 1
                    next_restart += args.broker_restart_every
                if now >= next_sample:
                    next_sample += args.sample_every
                    minute = round((now - start) / 60, 1)
                    for name, pid_of in processes.items():
                        line = {"bench": "soak", "minute": minute, "process": name}
                        line |= proc_figures(pid_of())
                        samples.append(line)
                        print(json.dumps(line), flush=True)
                    print(
                        json.dumps(
                            {"bench": "soak", "minute": minute, "broker_restarts": restarts}
                            | counts.snapshot()
                        ),
                        flush=True,
                    )
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
            alive = {svc.name: svc.alive() for svc in agents} | {"gateway": gw.service.alive()}
            gw.stop()
            for svc in agents:
                svc.stop()
            broker.stop()
        print(json.dumps({"bench": "soak", "summary": summarize(samples, args.warmup)}))
        print(json.dumps({"bench": "soak", "alive_at_end": alive, "cores": os.cpu_count()}))


def summarize(samples: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    """Per process: first sample after warm-up, last sample, and the change between them."""
    out: dict[str, Any] = {}
    for name in sorted({s["process"] for s in samples}):
        mine = [s for s in samples if s["process"] == name and s["minute"] >= warmup]
        if len(mine) < 2:
            continue
        first, last = mine[0], mine[-1]
        out[name] = {
            key: {"after_warmup": first[key], "end": last[key], "delta": last[key] - first[key]}
            for key in ("rss_kb", "threads", "fds")
        }
        out[name]["minutes"] = [first["minute"], last["minute"]]
    return out


if __name__ == "__main__":
    main()
