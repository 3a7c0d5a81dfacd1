#!/usr/bin/env python3
"""Latency of the product on real guests (issue 4): libvirt event -> Socket.IO, and REST overhead.

A private libvirtd (tests/support/libvirtd.py) with one idle boot-sector guest, a real Mosquitto,
`python -m agent` and `python -m gateway` (gunicorn, as deployed). This process holds its own
libvirt connection with a lifecycle callback and a Socket.IO client, so both ends of each
measurement are read on one monotonic clock:

- event_to_vm_state_ms: libvirt delivers a lifecycle event (suspend/resume, destroy/start
  done on this process's connection) -> the gateway pushes the matching `vm_state`.
  Target p99 < 50 ms.
- rest_overhead_ms: `POST /vm/<name>/suspend|resume` round trip (200, finished job) minus the
  bare libvirt call doing the same on this process's connection, paired per action and cycle.
  Target p50 < 10 ms.

`--driver test` runs the agent on libvirt's test:/// driver instead (no libvirtd, no root, no
guest): its calls take microseconds, so the round trip *is* the product's overhead, with the
hypervisor's own noise taken out. Only rest_overhead_ms is measured then (the test driver's
events do not leave the agent's process).

Only the product and what a user has runs beside the timed calls: the test stack's MQTT
recorder (a copy of every message of the host, for the tests' own checks) stops listening
once the stack is up, and the REST part has one Socket.IO client (the one it paces on; the
event part's is closed first). Each listener of the harness was one more delivery per message
and one more process waking on the same two cores: together about 0.5 ms of each command's
measured overhead here (four alternated runs: 0.2 to 1.1 ms).

Prints JSON lines, the driver, accelerator and the machine's core count and load in the first
one. The KVM run needs root:

    .venv/bin/python benchmarks/latency.py [--cycles 100] [--accel tcg]
    .venv/bin/python benchmarks/latency.py --driver test [--cycles 300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import libvirt  # noqa: E402

from tests.e2e.stack import Stack, TimedSio, running_stack  # noqa: E402
from tests.support.guests import Guests  # noqa: E402
from tests.support.libvirtd import Libvirtd  # noqa: E402

# virDomainEventType -> the vm_state the gateway should push for it.
EVENT_STATE = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: "running",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "paused",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "running",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(metric: str, values: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "metric": metric,
        "n": len(values),
        "p50": round(statistics.median(values), 2),
        "p99": round(percentile(values, 99), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        **extra,
    }


class EventClock:
    """libvirt lifecycle events of one domain, stamped on arrival (this process's event loop)."""

    def __init__(self, uri: str, uuid: str) -> None:
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=self._loop, daemon=True).start()
        self.conn = libvirt.open(uri)
        self.dom = self.conn.lookupByUUIDString(uuid)
        self.uuid = uuid
        self.events: list[tuple[float, int]] = []
        self._cb = self.conn.domainEventRegisterAny(
            self.dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
        )

    @staticmethod
    def _loop() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    def _on_event(self, _conn: Any, _dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        self.events.append((time.monotonic(), event))

    def wait(self, event: int, since: float, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, ev in list(self.events):
                if ev == event and at >= since:
                    return at
            time.sleep(0.001)
        raise TimeoutError(f"no libvirt event {event} within {timeout}s")

    def close(self) -> None:
        self.conn.domainEventDeregisterAny(self._cb)
        self.conn.close()


def event_to_socketio(
    clock: EventClock, sio: TimedSio, cycles: int, with_restart: int, booted: Callable[[], object]
) -> list[float]:
    """ms from each libvirt event to the gateway's matching vm_state push. After each start,
    `booted()` waits for the guest's BIOS to be done: until it reads the boot sector it keeps a
    vCPU busy (about 2.5 s of one of this machine's two cores under nested KVM), which the
    calls after it would be timed against."""
    lags: list[float] = []
    steps = [(clock.dom.suspend, libvirt.VIR_DOMAIN_EVENT_SUSPENDED)]
    steps.append((clock.dom.resume, libvirt.VIR_DOMAIN_EVENT_RESUMED))
    restart = [(clock.dom.destroy, libvirt.VIR_DOMAIN_EVENT_STOPPED)]
    restart.append((clock.dom.create, libvirt.VIR_DOMAIN_EVENT_STARTED))
    for i in range(cycles):
        for call, event in steps + (restart if i < with_restart else []):
            t0 = time.monotonic()
            call()
            at_event = clock.wait(event, t0)
            at_push, _ = sio.first_state(clock.uuid, EVENT_STATE[event], since=t0)
            lags.append(1000 * (at_push - at_event))
            if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
                booted()
    return lags


class LeanClient:
    """POSTs on one kept-alive connection with the standard library: `requests` spends about
    1 ms of Python per call here (session merging, urllib3's pool), which is the benchmark's
    own client, not the product, and would be counted as the gateway's overhead."""

    def __init__(self, url: str, token: str) -> None:
        parsed = urlsplit(url)
        self.conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Length": "0"}

    def __call__(self, path: str) -> tuple[int, dict[str, Any]]:
        self.conn.request("POST", path, headers=self.headers)
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read())


def rest_overhead(
    dom: libvirt.virDomain, stack: Stack, name: str, cycles: int, shared_guest: bool
) -> tuple[list[float], list[float], list[float]]:
    """REST round trips, bare libvirt calls, and their paired differences, in ms. `dom` is
    the same domain on this process's own connection (`shared_guest`), or a twin on a node
    of its own (the test driver).

    Every change of the guest, the product's or the bare one, ends with the gateway pushing
    the new state; the next timed call starts once that push came. Otherwise each call pays
    for the tail of the one before it (the agent re-reading the VM on its lifecycle event,
    the gateway ingesting and pushing it), a cost of the benchmark's pace, not of a command.
    A fixed sleep instead would let the CPUs idle down and time their wake-up."""
    rest: list[float] = []
    bare: list[float] = []
    post = LeanClient(stack.gateway.url, stack.gateway.tokens.operator)
    uuid = stack.gateway.get(f"/vm/{name}").json()["uuid"]
    sio = stack.sio()
    try:
        for _ in range(cycles):
            for verb, call in (("suspend", dom.suspend), ("resume", dom.resume)):
                after = "paused" if verb == "suspend" else "running"
                t0 = time.monotonic()
                status, body = post(f"/vm/{name}/{verb}?wait=10")
                rest.append(1000 * (time.monotonic() - t0))
                if status != 200 or body.get("status") != "succeeded":
                    raise RuntimeError(f"{verb}: {status} {body}")
                sio.first_state(uuid, after, since=t0)
                # The same action on the bare connection, from the state it changes.
                if (dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED) == (verb == "suspend"):
                    t0 = time.monotonic()
                    (dom.resume if verb == "suspend" else dom.suspend)()
                    if shared_guest:
                        sio.first_state(uuid, "running" if verb == "suspend" else "paused", t0)
                t0 = time.monotonic()
                call()
                bare.append(1000 * (time.monotonic() - t0))
                if shared_guest:
                    sio.first_state(uuid, after, since=t0)
    finally:
        sio.close()
    overhead = [r - b for r, b in zip(rest, bare, strict=True)]
    return rest, bare, overhead


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its live children (gunicorn's worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, and how busy they were when the run began."""
    return {"cores": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}


def print_rest(
    stack: Stack, dom: libvirt.virDomain, name: str, cycles: int, shared_guest: bool
) -> None:
    cores = {"cores": os.cpu_count()}
    procs = {"gateway": stack.gateway.service.pid, "agent": stack.agent.pid}
    if stack.broker.proc is not None:
        procs["broker"] = stack.broker.proc.pid
    cpu_before = {who: cpu_seconds(pid) for who, pid in procs.items()}
    rest, bare, overhead = rest_overhead(dom, stack, name, cycles, shared_guest)
    # CPU each process spent per command (the commands and whatever else it did meanwhile:
    # metrics ticks, state pushes): robust to a busy machine, unlike the round trip.
    cpu = {
        f"{who}_cpu_ms": round(1000 * (cpu_seconds(pid) - cpu_before[who]) / len(rest), 2)
        for who, pid in procs.items()
    }
    print(json.dumps({"metric": "cpu_per_command", **cpu, **cores}))
    print(json.dumps(summary("rest_round_trip_ms", rest, **cores)))
    print(json.dumps(summary("bare_libvirt_call_ms", bare, **cores)))
    print(json.dumps(summary("rest_overhead_ms", overhead, target_p50=5.0, **cores)))


def run_kvm(args: argparse.Namespace) -> None:
    if args.accel:
        os.environ["KVMSUP_E2E_ACCEL"] = args.accel
    env = Libvirtd().up(owner=os.getpid())
    try:
        accel = env.accel
        guests = Guests(env.uri, env.root / "images", accel)
        guest = guests.create("idle")
        guests.wait_booted(guest, timeout=60)
        head = {"driver": "qemu", "accel": accel.upper(), "libvirt_uri": env.uri}
        print(json.dumps({**head, "guest": guest.name, **machine()}))
        with running_stack(args.workdir, env.uri) as stack:
            stack.wait_vm(guest.name, "running")
            stack.stop_recording()
            clock = EventClock(env.uri, guest.uuid)
            try:
                sio = stack.sio()
                try:
                    lags = event_to_socketio(
                        clock, sio, args.cycles, args.restarts, lambda: guests.wait_booted(guest)
                    )
                finally:
                    sio.close()
                print(
                    json.dumps(
                        summary("event_to_vm_state_ms", lags, target_p99=50.0, cores=os.cpu_count())
                    )
                )
                print_rest(stack, clock.dom, guest.name, args.cycles, shared_guest=True)
            finally:
                clock.close()
        guests.cleanup()
    finally:
        env.down()
        env.remove()


def run_test_driver(args: argparse.Namespace) -> None:
    """The agent on test:///default (its running domain `test`), the bare call on this
    process's own test:///default: a separate in-memory node, the same driver code."""
    uri = "test:///default"
    conn = libvirt.open(uri)
    dom = conn.lookupByName("test")
    print(json.dumps({"driver": "test", "libvirt_uri": uri, "guest": "test", **machine()}))
    with running_stack(args.workdir, uri) as stack:
        stack.wait_vm("test", "running")
        stack.stop_recording()
        print_rest(stack, dom, "test", args.cycles, shared_guest=False)
    conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", choices=["qemu", "test"], default="qemu")
    parser.add_argument("--cycles", type=int, default=100, help="suspend/resume cycles per part")
    parser.add_argument("--restarts", type=int, default=10, help="destroy/start cycles too")
    parser.add_argument("--accel", choices=["kvm", "tcg"], help="default: KVM when usable")
    args = parser.parse_args(argv)
    # The broker's, agent's and gateway's logs and the gateway's database: gone after the run.
    args.workdir = Path(tempfile.mkdtemp(prefix="kvs-latency-"))
    try:
        if args.driver == "test":
            run_test_driver(args)
        else:
            run_kvm(args)
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
