"""The store under gevent's monkey-patching (gunicorn's gevent worker): a SQLite call that
waits on a locked file suspends only its caller, the event loop keeps serving, and the
writer, reads and history work as they do on threads."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.service

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
from gevent import monkey

monkey.patch_all()

import json, sys, time
from datetime import UTC, datetime

import gevent

from gateway.core.records import AuditEntry
from gateway.adapters.store import Store
from shared.messages import HostMetrics, MetricsBatch, VmMetrics

path = sys.argv[1]
store = Store(path, 60, 1)
store.start()
print("ready", flush=True)
sys.stdin.readline()  # the test now holds the file's write lock
wakes = []

def ticker():
    while True:
        gevent.sleep(0.01)
        wakes.append(time.monotonic())

gevent.spawn(ticker)
gevent.sleep(0.05)
now = datetime.now(UTC)
entry = AuditEntry("j1", now, "bob", "a", "u", "web", "start", {}, "pending", None, now, None)
print("calling", flush=True)
t0 = time.monotonic()
store.record_now(entry)  # the test holds the file's write lock for a while
t1 = time.monotonic()
during = [w for w in wakes if t0 < w < t1]

start = time.time() - 90
for k in range(40):  # 80 s of ticks: at least one minute is written by the writer
    ts = datetime.fromtimestamp(start + 2 * k, UTC)
    m = VmMetrics(host="a", uuid="u", name="web", state="running", vcpus=1, cpu_percent=k, ts=ts)
    store.add_metrics(
        MetricsBatch(host="a", interval_s=2, tick=k, host_metrics=HostMetrics(), vms=[m], ts=ts)
    )
assert store.flush(30)
points = store.history("a", "u", 5).points
job = store.job("j1")
store.stop()
print(json.dumps({
    "waited_s": t1 - t0,
    "loop_wakes_while_waiting": len(during),
    "cpus": [p.cpu_percent for p in points],
    "job": job is not None and job.result,
}), flush=True)
"""


def test_a_locked_file_suspends_only_the_caller_under_gevent(tmp_path: Path) -> None:
    path = str(tmp_path / "gw.db")
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, path],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    holder = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr
        holder.execute("BEGIN EXCLUSIVE")  # another writer holds the file, as a slow commit would
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "calling"
        time.sleep(1.5)
        holder.execute("COMMIT")
        out, err = proc.communicate(timeout=120)
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["waited_s"] >= 1.0, result  # record_now did wait for the lock...
    # ...and the loop kept running meanwhile (a blocked loop wakes its 10 ms sleeper 0 times,
    # a free one ~150 times; a busy machine still manages a handful).
    assert result["loop_wakes_while_waiting"] >= 5, result
    assert result["job"] == "pending"
    assert result["cpus"] == [float(k) for k in range(40)]
