#!/usr/bin/env python3
"""CPU time of one agent tick (bulk sample → metrics → MQTT publish) for 10, 100, 1000 domains.

Runs the real AgentService on a generated libvirt test-driver node file, publishing to a real
Mosquitto started here, with its own ticker idle; each tick is driven from this thread and
measured with process CPU time (every thread of the agent, the sampler and paho included).
Prints one JSON line per size. Target (issue 2): under 20 ms of CPU per tick for 100 domains.

`--guest hang` runs the guest watcher too, every VM read every 0.5 s with a 0.5 s deadline,
and every reading hangs for good (a guest agent that never answers): the tick must not change.
`--pause` spaces the measured ticks so that the watcher's scans and deadlines fall among them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import AgentSettings  # noqa: E402
from agent.hypervisor import GuestReading  # noqa: E402
from agent.service import AgentService  # noqa: E402
from tests.support.ports import free_port, wait_port  # noqa: E402

DOMAIN = """  <domain type='test'>
    <name>bench-{i:04d}</name>
    <uuid>c0000000-0000-4000-8000-{i:012d}</uuid>
    <memory unit='MiB'>1024</memory>
    <vcpu>2</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <source file='/tmp/b{i}.img'/><target dev='vda' bus='virtio'/>
      </disk>
      <interface type='ethernet'>
        <mac address='52:54:00:{m1:02x}:{m2:02x}:{m3:02x}'/><target dev='tap-b{i}'/>
      </interface>
    </devices>
  </domain>
"""


def node_file(directory: Path, count: int) -> Path:
    body = "".join(
        DOMAIN.format(i=i, m1=(i >> 16) & 255, m2=(i >> 8) & 255, m3=i & 255) for i in range(count)
    )
    path = directory / f"node-{count}.xml"
    path.write_text(
        "<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>64</cores><threads>1</threads>"
        f"<active>64</active><mhz>2000</mhz><model>bench</model></cpu><memory>268435456</memory>"
        f"{body}</node>\n"
    )
    return path


NEVER = threading.Event()


def hang(_uuid: str) -> GuestReading:
    """A guest agent that never answers: the reading holds its worker for good."""
    NEVER.wait()
    raise AssertionError("unreachable")


def measure(
    node: Path, broker_url: str, ticks: int, guest: str = "off", pause: float = 0.0
) -> dict[str, object]:
    settings = AgentSettings(
        host_id="bench",
        libvirt_uri=f"test://{node}",
        mqtt_url=broker_url,
        metrics_interval=3600,
        ha_discovery=False,
        vm_metrics_every=1_000_000,
        guest_info_every=0.5 if guest == "hang" else 0,
    )
    service = AgentService(settings)
    if guest == "hang":
        service.guest._read = hang  # every libvirt reading of the guests hangs
        service.guest.timeout_s = 0.5
    service.start()
    try:
        deadline = time.monotonic() + 60
        while not (service.inventory.synced and service.bus.connected):
            if time.monotonic() > deadline:
                raise RuntimeError("agent did not sync with libvirt and the broker in 60 s")
            time.sleep(0.05)
        for _ in range(3):  # warm-up: first samples have no previous counters
            service.run_tick()
        if guest == "hang":
            time.sleep(2.0)  # every worker hung, overdue readings reported unavailable
        cpu_ms, wall_ms, payload = [], [], 0
        for _ in range(ticks):
            c0, w0 = time.process_time(), time.perf_counter()
            batch = service.run_tick()
            time.sleep(0.005)  # let paho's thread write the batch: its CPU counts too
            cpu_ms.append((time.process_time() - c0) * 1000)
            wall_ms.append((time.perf_counter() - w0 - 0.005) * 1000)
            assert batch is not None and len(batch.vms) == len(service.inventory.uuids())
            payload = len(batch.model_dump_json())
            time.sleep(pause)
        return {
            "cpu_ms_mean": round(statistics.fmean(cpu_ms), 3),
            "cpu_ms_p50": round(statistics.median(cpu_ms), 3),
            "cpu_ms_max": round(max(cpu_ms), 3),
            "wall_ms_p50": round(statistics.median(wall_ms), 3),
            "batch_bytes": payload,
        }
    finally:
        service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--guest", choices=("off", "hang"), default="off")
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # JSON lines only on stdout, quiet stderr
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="kvmsup-bench-"))
    broker = subprocess.Popen(
        [mosquitto, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        for size in (int(s) for s in args.sizes.split(",")):
            url = f"mqtt://127.0.0.1:{port}"
            figures = measure(node_file(work, size), url, args.ticks, args.guest, args.pause)
            line = {
                "bench": "agent_tick",
                "domains": size,
                "ticks": args.ticks,
                "guest": args.guest,
                "pause_s": args.pause,
                **figures,
            }
            if size == 100:
                line["target_cpu_ms"] = 20
                line["meets_target"] = figures["cpu_ms_mean"] < 20  # type: ignore[operator]
            print(json.dumps(line), flush=True)
    finally:
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
