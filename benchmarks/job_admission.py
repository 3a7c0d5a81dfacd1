#!/usr/bin/env python3
"""Job admission: the gateway's cost of taking one command in, against the jobs it keeps.

`JobManager.submit` (the in-flight check, the table's trim, the request it builds) with a
table already full of finished jobs (`--keep`, the gateway's `KVMSUP_JOBS_KEEP`), one VM per
job, on a sender that does nothing: no broker, no SQLite, only the admission's own work. Each
job then ends through an agent reply, so the table stays full. A cost that grows with `--keep`
is a scan of the whole table on every command.

Prints one JSON line per `--keep`, with the machine's core count:

    .venv/bin/python benchmarks/job_admission.py [--keep 1000 10000] [--commands 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.core.jobs import JobManager
from shared.messages import CommandParams, CommandReply


def measure(keep: int, commands: int) -> dict[str, object]:
    jobs = JobManager(lambda *_: None, accept_timeout=5, keep=keep)
    vms = [str(uuid.UUID(int=i)) for i in range(1, keep + 2)]

    def run(vm: str, action: str, state: str) -> float:
        t0 = time.perf_counter()
        job = jobs.submit("h1", vm, "web", action, CommandParams(), "bench")
        took = time.perf_counter() - t0
        reply = CommandReply(
            id=job.id, host="h1", status="succeeded", action=action, vm=vm, state=state
        )
        jobs.on_reply(reply)
        return took

    for vm in vms:  # the table full of finished jobs, as after a busy day
        run(vm, "suspend", "paused")
    took = [run(vms[i % len(vms)], "resume", "running") for i in range(commands)]
    us = sorted(1e6 * t for t in took)
    return {
        "metric": "job_admission_us",
        "keep": keep,
        "kept": len(jobs.all()),
        "n": len(us),
        "p50": round(statistics.median(us), 1),
        "p99": round(us[int(0.99 * (len(us) - 1))], 1),
        "cores": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--commands", type=int, default=5000)
    args = parser.parse_args(argv)
    for keep in args.keep:
        print(json.dumps(measure(keep, args.commands)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
