#!/usr/bin/env python3
"""Socket.IO fan-out: N authenticated websocket clients, one VM state change, time to reach all.

A real Mosquitto, the gateway as deployed (`python -m gateway`: gunicorn, one gevent worker,
default caps) and `benchmarks/simulate_hosts.py` for a small fleet. N Socket.IO clients connect
over the websocket transport with a viewer token: real sockets over loopback, each speaking
Engine.IO 4 / Socket.IO 5 frames itself (wsproto framing, one asyncio loop per client process,
one process per 1,000 clients), so thousands fit where one thread per python-socketio client
would not. `--per-address` clients share each loopback source address (127.0.0.0/8), so the
gateway's per-address cap (16) applies as it would to real users. Each connect is time-bounded:
a gateway that cannot take N clients shows as failed connects, not a hang. The `connect` line
also gives the gateway worker's OS threads and RSS growth per connected client.

Then, with the clients connected:
- flips: a VM is suspended and resumed in turn through the simulator (a plain MQTT `set`, so
  the REST path is not needed); each client stamps the `vm_state` it receives. Figures: from
  the state's `seq` (the simulator's microsecond clock, read just before it publishes, as the
  agent does) to each client's receive, p50/p99/max over all clients and flips, and how many
  clients got each flip. Target p99 < 250 ms for 2,000 clients.
- REST /health and GET /vm/<name> p50/p99 from two sequential clients meanwhile (target p99
  < 50 ms); requests time out after `--rest-timeout` and count as errors.
Before the clients connect, a few REST commands check the simulator's command replies.

    .venv/bin/python benchmarks/sio_fanout.py [--clients 2000] [--flips 10] [--per-address 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
import requests  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from wsproto import ConnectionType, WSConnection  # noqa: E402
from wsproto.events import (  # noqa: E402
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from benchmarks.gateway_ingest import (  # noqa: E402
    Api,
    Poller,
    Simulator,
    cpu_seconds,
    percentile,
    proc_status,
    wait_vms,
    worker_pid,
)
from benchmarks.simulate_hosts import Fleet  # noqa: E402
from shared.topics import POLICY, Topics  # noqa: E402
from tests.support.broker import Broker  # noqa: E402
from tests.support.gateway import GatewayProc  # noqa: E402

# Connects per second and client process below which the connect phase gives up.
MIN_CONNECT_RATE = 15


# -- the clients (in child processes) -----------------------------------------------------------
class SioClient:
    """One Socket.IO client over a raw websocket: connect with a token, answer pings, stamp
    every `vm_state` of the watched VM on arrival."""

    def __init__(self, port: int, token: str, uuid: str, shared: Any, source: str) -> None:
        self.port, self.token, self.uuid, self.shared = port, token, uuid, shared
        self.source = source  # the loopback address this client connects from
        self.connected = asyncio.Event()
        self.failure: str | None = None
        self.received: list[tuple[int, float, str]] = []  # seq, arrival (epoch), state ts
        self.dropped = False
        self.writer: asyncio.StreamWriter | None = None
        self.ws = WSConnection(ConnectionType.CLIENT)

    def send(self, text: str) -> None:
        assert self.writer is not None
        self.writer.write(self.ws.send(Message(data=text)))

    async def run(self) -> None:
        try:
            reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=(self.source, 0)
            )
            target = "/socket.io/?EIO=4&transport=websocket"
            self.writer.write(self.ws.send(Request(host=f"127.0.0.1:{self.port}", target=target)))
            parts: list[str] = []
            while True:
                data = await reader.read(65536)
                now = time.time()
                if not data:
                    break
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        parts.append(event.data)
                        if event.message_finished:
                            self.packet("".join(parts), now)
                            parts = []
                    elif isinstance(event, Ping):
                        self.writer.write(self.ws.send(event.response()))
                    elif isinstance(event, RejectConnection):
                        self.failure = f"http {event.status_code}"
                        return
                    elif isinstance(event, CloseConnection):
                        return
                    elif isinstance(event, AcceptConnection):
                        pass
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.failure = self.failure or type(exc).__name__
        finally:
            if self.connected.is_set():
                self.dropped = True
            elif self.failure is None:
                self.failure = "closed before connect"
            self.connected.set()  # wakes the waiter; `failure` says how it ended

    def packet(self, text: str, now: float) -> None:
        if text.startswith('42["vm_state"'):
            data = json.loads(text[2:])[1]
            if data.get("uuid") == self.uuid:
                self.received.append((int(data["seq"]), now, str(data.get("updated_at"))))
                with self.shared.get_lock():
                    self.shared.value += 1
        elif text == "2":  # Engine.IO ping: answer pong
            self.send("3")
        elif text.startswith("0"):  # Engine.IO open: Socket.IO connect with the token
            self.send("40" + json.dumps({"token": self.token}))
        elif text.startswith("40"):
            self.connected.set()
        elif text.startswith("44"):
            self.failure = "refused: " + text[2:120]
            self.connected.set()

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()


def source_address(index: int, per_address: int) -> str:
    """Client `index`'s loopback source address: `per_address` clients share one, as a few
    browser tabs behind one NAT would, so the gateway's per-address cap does not apply to the
    benchmark as a whole. Linux routes all of 127.0.0.0/8 to the loopback interface."""
    n = index // per_address
    return f"127.{1 + n // 62500}.{n // 250 % 250}.{2 + n % 250}"


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _clients_main(
    port: int,
    token: str,
    uuid: str,
    first: int,
    count: int,
    per_address: int,
    timeout: float,
    ctl: Any,
    shared: Any,
) -> None:
    raise_fd_limit()
    clients = [
        SioClient(port, token, uuid, shared, source_address(first + i, per_address))
        for i in range(count)
    ]
    tasks: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(50)  # handshakes in flight at once
    # One deadline for the whole phase as well: when the gateway stops taking clients, the
    # rest would otherwise time out fifty at a time, one `timeout` after another. A busy
    # machine connects a few dozen clients a second: the phase allows for MIN_CONNECT_RATE.
    deadline = time.monotonic() + timeout + count / MIN_CONNECT_RATE

    async def connect(c: SioClient) -> float | None:
        async with gate:
            t0 = time.monotonic()
            if t0 >= deadline:
                c.failure = "not tried: connect phase over"
                return None
            tasks.append(asyncio.create_task(c.run()))
            try:
                await asyncio.wait_for(c.connected.wait(), min(timeout, deadline - t0))
            except TimeoutError:
                c.failure = "connect timeout"
                c.close()
                return None
            return None if c.failure else time.monotonic() - t0

    times = await asyncio.gather(*(connect(c) for c in clients))
    failures: dict[str, int] = {}
    for c in clients:
        if c.failure:
            failures[c.failure] = failures.get(c.failure, 0) + 1
    ok = [t for t in times if t is not None]
    ctl.send({"connected": len(ok), "failures": failures, "connect_s": ok})
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(ctl.fileno(), stop.set)
    await stop.wait()
    loop.remove_reader(ctl.fileno())
    ctl.recv()
    ctl.send(
        {
            "received": [r for c in clients if not c.failure for r in c.received],
            "dropped": sum(c.dropped for c in clients),
        }
    )
    for c in clients:
        c.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def clients_process(
    port: int,
    token: str,
    uuid: str,
    first: int,
    count: int,
    per_address: int,
    timeout: float,
    ctl: Any,
    shared: Any,
) -> None:
    asyncio.run(_clients_main(port, token, uuid, first, count, per_address, timeout, ctl, shared))


# -- the measurement (main process) -------------------------------------------------------------
def summary(values_ms: list[float]) -> dict[str, Any]:
    if not values_ms:
        return {"n": 0}
    return {
        "n": len(values_ms),
        "p50_ms": round(percentile(values_ms, 50), 1),
        "p99_ms": round(percentile(values_ms, 99), 1),
        "max_ms": round(max(values_ms), 1),
    }


def command_round_trips(gw: GatewayProc, name: str, cycles: int) -> dict[str, Any]:
    """REST commands answered by the simulator: it speaks the command contract."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {gw.tokens.operator}"
    times: list[float] = []
    statuses: dict[str, int] = {}
    for i in range(cycles * 2):
        verb = "suspend" if i % 2 == 0 else "resume"
        t0 = time.perf_counter()
        try:
            resp = session.post(f"{gw.url}/vm/{name}/{verb}?wait=10", timeout=15)
            status = str(resp.json().get("status", resp.status_code))
        except (requests.RequestException, ValueError) as exc:
            status = type(exc).__name__
        times.append((time.perf_counter() - t0) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
    return {"statuses": statuses, **summary(times)}


class Flipper:
    """Publishes plain `set` commands to the simulated host, as Home Assistant would."""

    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def flip(self, topic: str, word: str) -> None:
        qos = POLICY["vm_set"].qos
        self.client.publish(topic, word, qos=qos, retain=False).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000, help="Socket.IO clients (N)")
    parser.add_argument("--client-procs", type=int, default=0, help="0: one per 1000 clients")
    parser.add_argument(
        "--per-address", type=int, default=8, help="clients per loopback source address"
    )
    parser.add_argument("--flips", type=int, default=10, help="state changes measured")
    parser.add_argument("--flip-timeout", type=float, default=5.0, help="wait per flip, s")
    parser.add_argument("--connect-timeout", type=float, default=15.0, help="per client, s")
    parser.add_argument("--rest-timeout", type=float, default=5.0, help="per REST request, s")
    parser.add_argument("--rest-duration", type=float, default=10.0, help="REST window, s")
    parser.add_argument("--hosts", type=int, default=4, help="simulated hosts")
    parser.add_argument("--vms", type=int, default=25, help="VMs per host")
    parser.add_argument("--interval", type=float, default=2.0, help="metrics interval, s")
    parser.add_argument("--sim-processes", type=int, default=1, help="simulator processes")
    args = parser.parse_args()

    fleet = Fleet(args.hosts, args.vms, args.interval)
    topics = Topics(fleet.prefix)
    host, uuid, name = fleet.host_id(0), fleet.vm_uuid(0, 1), fleet.vm_name(0, 1)  # running
    work = Path(tempfile.mkdtemp(prefix="kvmsup-fanout-"))
    broker = Broker(work)
    # The gateway as deployed, with its default caps (10,000 sockets, 16 per address).
    gw = GatewayProc(work, broker.url, gateway_id="bench")
    sim: Simulator | None = None
    flipper: Flipper | None = None
    ctx = mp.get_context("spawn")
    procs: list[tuple[Any, Any]] = []
    pollers: list[Poller] = []
    common = {"cores": os.cpu_count(), "clients": args.clients, "server": "gunicorn gevent"}
    try:
        broker.start()
        gw.start()
        worker = worker_pid(gw.service.pid)
        sim = Simulator(broker.url, args, work / "simulator.log")
        sim.wait_ready(60)
        wait_vms(Api(gw), args.hosts * args.vms, 60)
        print(
            json.dumps({"figure": "commands", **common, **command_round_trips(gw, name, 3)}),
            flush=True,
        )

        shared = ctx.Value("l", 0)
        nprocs = args.client_procs or max(1, math.ceil(args.clients / 1000))
        before = proc_status(worker)
        t0 = time.monotonic()
        first = 0
        for i in range(nprocs):
            share = args.clients // nprocs + (i < args.clients % nprocs)
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=clients_process,
                args=(
                    gw.port,
                    gw.tokens.viewer,
                    uuid,
                    first,
                    share,
                    args.per_address,
                    args.connect_timeout,
                    child,
                    shared,
                ),
                daemon=True,
            )
            first += share
            proc.start()
            procs.append((proc, parent))
        reports = []
        for _proc, parent in procs:
            if parent.poll(args.connect_timeout * (args.clients / 100 + 1) + 60):
                reports.append(parent.recv())
        connected = sum(r["connected"] for r in reports)
        failures: dict[str, int] = {}
        for r in reports:
            for k, v in r["failures"].items():
                failures[k] = failures.get(k, 0) + v
        connect_ms = [t * 1000 for r in reports for t in r["connect_s"]]
        print(
            json.dumps(
                {
                    "figure": "connect",
                    **common,
                    "connected": connected,
                    "failed": args.clients - connected,
                    "failures": failures,
                    "seconds": round(time.monotonic() - t0, 1),
                    "connect": summary(connect_ms),
                    "gateway_os_threads": proc_status(worker).get("os_threads"),
                    "gateway_rss_kb_before": before.get("rss_kb"),
                    "gateway_rss_kb_after": proc_status(worker).get("rss_kb"),
                    "rss_kb_per_client": round(
                        (proc_status(worker).get("rss_kb", 0) - before.get("rss_kb", 0))
                        / max(1, connected),
                        1,
                    ),
                }
            ),
            flush=True,
        )

        pollers = [
            Poller(gw, "/health", args.rest_timeout),
            Poller(gw, f"/vm/{name}", args.rest_timeout),
        ]
        rest_start = time.monotonic()
        cpu_start = cpu_seconds(worker)
        for p in pollers:
            p.start()
        flipper = Flipper(broker)
        set_topic = topics.vm_set(host, uuid)
        sent_at: list[float] = []
        got_per_flip: list[int] = []
        flip_cpu_ms: list[float] = []
        for i in range(args.flips):
            before = shared.value
            sent_at.append(time.time())
            cpu0 = cpu_seconds(worker)
            flipper.flip(set_topic, "suspend" if i % 2 == 0 else "resume")
            deadline = time.monotonic() + args.flip_timeout
            while shared.value - before < connected and time.monotonic() < deadline:
                time.sleep(0.01)
            flip_cpu_ms.append((cpu_seconds(worker) - cpu0) * 1000)
            got_per_flip.append(shared.value - before)
            time.sleep(0.2)
        time.sleep(max(0.0, args.rest_duration - (time.monotonic() - rest_start)))
        window_cpu = cpu_seconds(worker) - cpu_start
        window_s = time.monotonic() - rest_start
        # Requests still waiting must time out while the clients hold the gateway: one served
        # once they leave would not be a request served meanwhile.
        for p in pollers:
            p.halt.set()
        for p in pollers:
            p.join(timeout=args.rest_timeout + 5)

        received: list[tuple[int, float, str]] = []
        dropped = 0
        for _proc, parent in procs:
            with contextlib.suppress(OSError, EOFError):
                parent.send("stop")
                if parent.poll(30):
                    r = parent.recv()
                    received += r["received"]
                    dropped += r["dropped"]
        # The simulator stamps each state's seq from its microsecond clock just before it
        # publishes (as the agent does): publish → every client's receive.
        lat = [(at - seq / 1e6) * 1000 for seq, at, _ts in received]
        print(
            json.dumps(
                {
                    "figure": "fanout",
                    **common,
                    "connected": connected,
                    "flips": args.flips,
                    "expected": connected * args.flips,
                    "received": len(received),
                    "fewest_per_flip": min(got_per_flip) if got_per_flip else 0,
                    "dropped_clients": dropped,
                    # the gateway worker's CPU (of one core) over the flips and REST window
                    "gateway_cpu_pct": round(100 * window_cpu / max(window_s, 1e-9), 1),
                    # its CPU from each publish until the last client had it (REST included):
                    # on a machine that gives it a whole core, about the fan-out's duration
                    "gateway_cpu_ms_per_flip": round(sorted(flip_cpu_ms)[len(flip_cpu_ms) // 2])
                    if flip_cpu_ms
                    else None,
                    "publish_to_client": summary(lat),
                    "target_p99_ms": 250,
                }
            ),
            flush=True,
        )
        for p, label in zip(pollers, ("GET /health", "GET /vm/<name>"), strict=True):
            print(
                json.dumps(
                    {
                        "figure": label,
                        **common,
                        "connected": connected,
                        **p.figures(),
                        "target_p99_ms": 50,
                    }
                ),
                flush=True,
            )
        print(
            json.dumps(
                {
                    "figure": "gateway_worker",
                    **common,
                    **proc_status(worker),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
            ),
            flush=True,
        )
    finally:
        for p in pollers:
            p.halt.set()
        for proc, _parent in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        if flipper is not None:
            flipper.close()
        if sim is not None:
            sim.stop()
        gw.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
