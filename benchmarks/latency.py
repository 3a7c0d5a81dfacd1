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

Prints JSON lines, the accelerator (KVM or TCG) in the first one. Run as root:

    .venv/bin/python benchmarks/latency.py [--cycles 100] [--accel tcg]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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
    clock: EventClock, sio: TimedSio, cycles: int, with_restart: int
) -> list[float]:
    """ms from each libvirt event to the gateway's matching vm_state push."""
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
    return lags


def rest_overhead(
    clock: EventClock, stack: Stack, name: str, cycles: int
) -> tuple[list[float], list[float], list[float]]:
    """REST round trips, bare libvirt calls, and their paired differences, in ms."""
    rest: list[float] = []
    bare: list[float] = []
    for _ in range(cycles):
        for verb, call in (("suspend", clock.dom.suspend), ("resume", clock.dom.resume)):
            t0 = time.monotonic()
            resp = stack.gateway.post(f"/vm/{name}/{verb}?wait=10")
            rest.append(1000 * (time.monotonic() - t0))
            body = resp.json()
            if resp.status_code != 200 or body.get("status") != "succeeded":
                raise RuntimeError(f"{verb}: {resp.status_code} {body}")
            # The same action on the bare connection (undone first so it changes something).
            (clock.dom.resume if verb == "suspend" else clock.dom.suspend)()
            t0 = time.monotonic()
            call()
            bare.append(1000 * (time.monotonic() - t0))
    overhead = [r - b for r, b in zip(rest, bare, strict=True)]
    return rest, bare, overhead


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100, help="suspend/resume cycles per part")
    parser.add_argument("--restarts", type=int, default=10, help="destroy/start cycles too")
    parser.add_argument("--accel", choices=["kvm", "tcg"], help="default: KVM when usable")
    args = parser.parse_args(argv)
    if args.accel:
        os.environ["KVMSUP_E2E_ACCEL"] = args.accel
    workdir = Path(tempfile.mkdtemp(prefix="kvs-latency-"))
    env = Libvirtd().up(owner=os.getpid())
    try:
        accel = env.accel
        guests = Guests(env.uri, env.root / "images", accel)
        guest = guests.create("idle")
        guests.wait_booted(guest, timeout=60)
        print(json.dumps({"accel": accel.upper(), "libvirt_uri": env.uri, "guest": guest.name}))
        with running_stack(workdir, env.uri) as stack:
            stack.wait_vm(guest.name, "running")
            clock = EventClock(env.uri, guest.uuid)
            sio = stack.sio()
            try:
                lags = event_to_socketio(clock, sio, args.cycles, args.restarts)
                print(json.dumps(summary("event_to_vm_state_ms", lags, target_p99=50.0)))
                rest, bare, overhead = rest_overhead(clock, stack, guest.name, args.cycles)
                print(json.dumps(summary("rest_round_trip_ms", rest)))
                print(json.dumps(summary("bare_libvirt_call_ms", bare)))
                print(json.dumps(summary("rest_overhead_ms", overhead, target_p50=10.0)))
            finally:
                sio.close()
                clock.close()
        guests.cleanup()
    finally:
        env.down()
        env.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
