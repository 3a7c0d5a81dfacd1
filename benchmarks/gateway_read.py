#!/usr/bin/env python3
"""Read latency and throughput of the gateway (MQTT-fed cache) against a direct-libvirt
reference server that calls libvirt on every request like the seed backend did.

2 hosts x 50 VMs on libvirt's test driver served by a real libvirtd (`test+unix://`), a real
Mosquitto, two agents, the gateway under gunicorn (1 worker, threads); the reference server runs
under the same gunicorn settings. Prints JSON lines: one per (target, route), then a summary.

    .venv/bin/python benchmarks/gateway_read.py [--duration 5] [--clients 8]

With `--fleet`, the read figures at fleet scale instead (10,000 simulated VMs, 25,000 VM
metrics/s; what `benchmarks/gateway_ingest.py` prints, options passed on to it):

    .venv/bin/python benchmarks/gateway_read.py --fleet [--read-duration 15]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.broker import Broker  # noqa: E402
from tests.support.ports import free_port, wait_port  # noqa: E402
from tests.support.testdriver import TestDriverDaemon  # noqa: E402

HOSTS = ("bench-a", "bench-b")


# -- the fixture: node files and libvirtd -------------------------------------------------------
def node_xml(host: str, count: int) -> str:
    letter = host[-1]
    domains = []
    for i in range(1, count + 1):
        hexid = f"{ord(letter):02x}{i:06x}"
        mac = f"52:54:00:{ord(letter) % 256:02x}:{i // 256:02x}:{i % 256:02x}"
        domains.append(f"""
  <domain type='test'>
    <name>{host}-vm-{i:02d}</name>
    <uuid>{hexid}-0000-4000-8000-{i:012x}</uuid>
    <memory unit='MiB'>1024</memory><currentMemory unit='MiB'>1024</currentMemory>
    <vcpu>2</vcpu><os><type>hvm</type></os>
    <devices>
      <disk type='file' device='disk'><source file='/img/{host}-{i}.qcow2'/>
        <target dev='vda' bus='virtio'/></disk>
      <interface type='ethernet'><mac address='{mac}'/>
        <target dev='tap-{letter}{i}'/><model type='virtio'/></interface>
    </devices>
  </domain>""")
    return (
        f"<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>16</cores><threads>1</threads>"
        f"<active>16</active><mhz>2400</mhz><model>bench</model></cpu>"
        f"<memory>134217728</memory>{''.join(domains)}\n</node>\n"
    )


@contextlib.contextmanager
def libvirtd(workdir: Path) -> Iterator[str]:
    """The URI query serving the test driver: a private libvirtd of the tests' own making.

    Always our own daemon, never the machine's: the figures must not depend on what else a
    system libvirtd is doing.
    """
    daemon = TestDriverDaemon(workdir)
    daemon.start()
    try:
        yield f"?socket={daemon.socket}"
    finally:
        daemon.stop()


# -- the direct-libvirt reference server (benchmark only, never a product path) ---------------
def reference_app(uris: list[str]) -> Any:
    import libvirt  # only the reference imports it
    from flask import Flask, abort, jsonify

    conns = [libvirt.open(uri) for uri in uris]
    states = {
        1: "running",
        2: "running",
        3: "paused",
        4: "shutting_down",
        5: "stopped",
        6: "crashed",
        7: "suspended",
    }
    app = Flask("reference")
    prev_cpu: dict[str, tuple[float, int]] = {}

    def find(name: str) -> Any:
        for conn in conns:
            with contextlib.suppress(libvirt.libvirtError):
                return conn.lookupByName(name)
        abort(404)

    @app.get("/vms")
    def vms() -> Any:
        out = []
        for conn in conns:
            for dom in conn.listAllDomains(0):
                state, max_mem, _mem, vcpus, _cpu = dom.info()
                out.append(
                    {
                        "name": dom.name(),
                        "state": states.get(state, "unknown"),
                        "vcpus": vcpus,
                        "memory_mb": max_mem // 1024,
                        "is_active": bool(dom.isActive()),
                    }
                )
        return jsonify({"count": len(out), "vms": out})

    @app.get("/vm/<name>/metrics")
    def metrics(name: str) -> Any:
        dom = find(name)
        state, max_mem, mem, vcpus, cpu_time = dom.info()
        now = time.monotonic()
        last = prev_cpu.get(name)
        prev_cpu[name] = (now, cpu_time)
        cpu = None
        if last and now > last[0]:
            cpu = min(100.0, 100 * (cpu_time - last[1]) / ((now - last[0]) * 1e9 * vcpus))
        tree = ET.fromstring(dom.XMLDesc(0))
        disks = []
        for target in tree.findall("./devices/disk/target"):
            dev = target.get("dev", "")
            _rr, rb, _wr, wb, _err = dom.blockStats(dev)
            disks.append({"device": dev, "read_bytes": rb, "write_bytes": wb})
        nics = []
        for target in tree.findall("./devices/interface/target"):
            dev = target.get("dev", "")
            stats = dom.interfaceStats(dev)
            nics.append({"interface": dev, "rx_bytes": stats[0], "tx_bytes": stats[4]})
        return jsonify(
            {
                "name": name,
                "state": states.get(state, "unknown"),
                "cpu_percent": cpu,
                "vcpus": vcpus,
                "memory_percent": round(100 * mem / max_mem, 1),
                "memory_used_mb": mem // 1024,
                "memory_total_mb": max_mem // 1024,
                "disk_io": disks,
                "network_io": nics,
            }
        )

    return app


def serve_reference(port: int, uris: list[str], threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": f"127.0.0.1:{port}",
                "workers": 1,
                "worker_class": "gthread",
                "threads": threads,
                "control_socket_disable": True,
                "accesslog": None,
            }.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return reference_app(uris)

    Server().run()


# -- load generation --------------------------------------------------------------------------
def _client(url: str, paths: list[str], token: str | None, until: float) -> tuple[list[float], int]:
    import requests

    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    latencies: list[float] = []
    errors = 0
    i = 0
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        resp = session.get(url + paths[i % len(paths)], timeout=30)
        latencies.append(time.perf_counter() - t0)
        errors += resp.status_code != 200
        i += 1
    return latencies, errors


def measure(
    pool: ProcessPoolExecutor,
    clients: int,
    url: str,
    paths: list[str],
    token: str | None,
    duration: float,
) -> dict[str, Any]:
    _client(url, paths, token, time.perf_counter() + 0.5)  # warm-up (connections, caches)
    start = time.perf_counter()
    until = start + duration
    futures = [pool.submit(_client, url, paths, token, until) for _ in range(clients)]
    results = [f.result() for f in futures]
    elapsed = time.perf_counter() - start
    lat = sorted(x for r in results for x in r[0])
    q = statistics.quantiles(lat, n=100)
    return {
        "requests": len(lat),
        "errors": sum(r[1] for r in results),
        "rps": round(len(lat) / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 3),
        "p99_ms": round(q[98] * 1000, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=50, help="VMs per host")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client processes")
    parser.add_argument("--threads", type=int, default=16, help="gunicorn threads, both servers")
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="instead: GET /vms and /stats/summary p50/p99 for 10,000 simulated VMs while the "
        "gateway ingests 25,000 VM metrics/s (benchmarks/gateway_ingest.py; its options follow)",
    )
    args, rest = parser.parse_known_args()
    if args.fleet:
        # The fleet-scale read figures need the simulated fleet: that benchmark measures them,
        # with ingest CPU, shed and late counts and the gateway's RSS in the same run.
        ingest = [sys.executable, str(ROOT / "benchmarks" / "gateway_ingest.py"), *rest]
        return subprocess.run(ingest, cwd=ROOT, check=False).returncode
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    work = Path(tempfile.mkdtemp(prefix="kvmsup-bench-"))
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, cmd: list[str], env: dict[str, str]) -> None:
        log = (work / f"{name}.log").open("wb")
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )
        )

    broker = Broker(work)
    try:
        with libvirtd(work) as query:
            uris = []
            for host in HOSTS:
                path = work / f"{host}.xml"
                path.write_text(node_xml(host, args.vms))
                uris.append(f"test+unix://{path}{query}")
            broker.start()
            for host, uri in zip(HOSTS, uris, strict=True):
                spawn(
                    f"agent-{host}",
                    [sys.executable, "-m", "agent"],
                    {
                        "KVMSUP_HOST_ID": host,
                        "KVMSUP_MQTT_URL": broker.url,
                        "LIBVIRT_URI": uri,
                        "KVMSUP_METRICS_INTERVAL": "2",
                        "KVMSUP_HA_DISCOVERY": "false",
                    },
                )
            token = secrets.token_hex(16)
            gw_port, ref_port = free_port(), free_port()
            spawn(
                "gateway",
                [sys.executable, "-m", "gateway"],
                {
                    "HOST": "127.0.0.1",
                    "PORT": str(gw_port),
                    "KVMSUP_MQTT_URL": broker.url,
                    "KVMSUP_GATEWAY_ID": "bench",
                    "KVMSUP_API_TOKENS": f"bench:viewer:{token}",
                    "KVMSUP_THREADS": str(args.threads),
                    "KVMSUP_DB": str(work / "gateway.db"),
                },
            )
            spawn(
                "reference",
                [
                    sys.executable,
                    __file__,
                    "--serve-reference",
                    str(ref_port),
                    *uris,
                    "--threads",
                    str(args.threads),
                ],
                {},
            )
            wait_port(gw_port, 20)
            wait_port(ref_port, 20)
            wait_ready(f"http://127.0.0.1:{gw_port}", token, len(HOSTS) * args.vms)

            names = [f"{h}-vm-{i:02d}" for h in HOSTS for i in range(1, args.vms + 1)]
            routes = {"/vms": ["/vms"], "/vm/<name>/metrics": [f"/vm/{n}/metrics" for n in names]}
            results: dict[tuple[str, str], dict[str, Any]] = {}
            with ProcessPoolExecutor(args.clients) as pool:
                for route, paths in routes.items():
                    for target, port, tok in (
                        ("gateway", gw_port, token),
                        ("reference", ref_port, None),
                    ):
                        r = measure(
                            pool,
                            args.clients,
                            f"http://127.0.0.1:{port}",
                            paths,
                            tok,
                            args.duration,
                        )
                        results[(target, route)] = r
                        print(
                            json.dumps(
                                {
                                    "target": target,
                                    "route": route,
                                    "cores": os.cpu_count(),
                                    "hosts": len(HOSTS),
                                    "vms_per_host": args.vms,
                                    "clients": args.clients,
                                    **r,
                                }
                            ),
                            flush=True,
                        )
            speed = {
                route: round(
                    results[("gateway", route)]["rps"]
                    / max(results[("reference", route)]["rps"], 0.1),
                    2,
                )
                for route in routes
            }
            print(
                json.dumps(
                    {
                        "summary": "gateway rps / reference rps",
                        "cores": os.cpu_count(),
                        **speed,
                        "target_vms": ">= 5",
                        "target_metrics": ">= 1",
                        "libvirtd": "started by benchmark",
                    }
                )
            )
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
    return 0


def wait_ready(url: str, token: str, count: int, timeout: float = 30) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            body = requests.get(
                url + "/stats/summary", timeout=2, headers={"Authorization": f"Bearer {token}"}
            ).json()
            if body.get("total_vms") == count and body.get("avg_cpu_percent") is not None:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the gateway did not see {count} VMs within {timeout}s")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-reference":
        threads = int(sys.argv[sys.argv.index("--threads") + 1])
        serve_reference(int(sys.argv[2]), sys.argv[3 : sys.argv.index("--threads")], threads)
    else:
        sys.exit(main())
