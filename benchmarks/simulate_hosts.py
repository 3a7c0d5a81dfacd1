#!/usr/bin/env python3
"""Simulated agents: H hosts x V VMs speaking the MQTT contract of SPEC §3, from P processes.

Each host is its own MQTT v5 client (its own will: the retained `online:false` status), and does
what `python -m agent` does on the wire: retained `online:true` status after every connect, the
retained state of each VM (seq growing), one metrics batch per interval, and commands answered
(`cmd` with ResponseTopic/CorrelationData: `accepted` then the final reply, a new retained state,
the lifecycle event and the command outcome on `events`; plain `set` commands too). Payloads are
built with the `shared` models and topics; a metrics batch is rendered from a per-host template
whose numbers are patched each tick, and rendered batches are checked against `MetricsBatch`.

The hosts of one process share one thread: paho clients on one selector (epoll), no thread per
client. Prints one JSON line per second (cumulative counts, CPU seconds of the simulator) and a
`ready` line once every host has connected and published its states. SIGINT/SIGTERM stop it:
every host publishes `online:false` first.

    .venv/bin/python benchmarks/simulate_hosts.py --broker mqtt://127.0.0.1:1883 \
        [--hosts 100] [--vms 100] [--interval 2] [--processes 2] [--duration 60]
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import multiprocessing as mp
import os
import queue
import re
import resource
import selectors
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from paho.mqtt.subscribeoptions import SubscribeOptions  # noqa: E402

# The agent's own pure decoding and transition rules, so the replies are the agent's.
from agent.commands.requests import (  # noqa: E402
    Rejection,
    correlation_text,
    decode_command,
    decode_set,
    valid_response_topic,
)
from agent.commands.transitions import ALLOWED_FROM, TARGET  # noqa: E402
from shared.messages import (  # noqa: E402
    ACTIVE_STATES,
    CommandReply,
    CommandRequest,
    DiskIO,
    ErrorInfo,
    HostMetrics,
    HostStatus,
    Hypervisor,
    MetricsBatch,
    NetIO,
    NodeInfo,
    VmEvent,
    VmMetrics,
    VmState,
    VmStateName,
    dump,
    iso_z,
    utc_now,
)
from shared.topics import POLICY, TopicKind, Topics  # noqa: E402

# What an action leaves a running-or-not VM in, when it applies (reboot/reset: still running).
RESULT: dict[str, VmStateName] = {
    "start": "running",
    "shutdown": "stopped",
    "destroy": "stopped",
    "reboot": "running",
    "reset": "running",
    "suspend": "paused",
    "resume": "running",
}
LIFECYCLE = {
    "start": "started",
    "shutdown": "stopped",
    "destroy": "stopped",
    "reboot": "rebooted",
    "reset": "reset",
    "suspend": "suspended",
    "resume": "resumed",
}
REASON: dict[VmStateName, str] = {"running": "booted", "paused": "user", "stopped": "shutdown"}

# Sentinels in a template batch: each is a number or timestamp nothing else can produce.
TS_MARK = "1999-09-09T09:09:09.099Z"
TICK_MARK, CPU_MARK = 987654321, 12.345678901
RB_MARK, WB_MARK, RX_MARK, TX_MARK = 11111111111, 22222222222, 33333333333, 44444444444
SLOTS = {
    str(TICK_MARK): "tick",
    repr(CPU_MARK): "cpu",
    str(RB_MARK): "rb",
    str(WB_MARK): "wb",
    str(RX_MARK): "rx",
    str(TX_MARK): "tx",
}
SLOT_RE = re.compile("(" + "|".join(re.escape(s) for s in [f'"{TS_MARK}"', *SLOTS]) + ")")


@dataclass(frozen=True)
class Fleet:
    """Which hosts and VMs exist: the same answer in every process and in the benchmarks."""

    hosts: int
    vms: int
    interval: float
    prefix: str = "kvmsup"
    host_prefix: str = "sim"

    def host_id(self, h: int) -> str:
        return f"{self.host_prefix}-{h:04d}"

    def vm_uuid(self, h: int, v: int) -> str:
        return f"{h:08x}-5100-4000-8000-{v:012x}"

    def vm_name(self, h: int, v: int) -> str:
        return f"{self.host_id(h)}-vm-{v:04d}"

    def names(self) -> list[str]:
        return [self.vm_name(h, v) for h in range(self.hosts) for v in range(self.vms)]


def _tmpl_vm(host: str, uuid: str, name: str, state: VmStateName, interval: float) -> VmMetrics:
    return VmMetrics(
        host=host,
        uuid=uuid,
        name=name,
        state=state,
        ts=utc_now(),
        cpu_percent=CPU_MARK,
        vcpus=2,
        memory_percent=25.0,
        memory_used_mb=256,
        memory_total_mb=1024,
        memory_source="guest",
        disk_io=[
            DiskIO(
                device="vda",
                read_bytes=RB_MARK,
                write_bytes=WB_MARK,
                read_bps=4096.0,
                write_bps=8192.0,
                read_iops=1.0,
                write_iops=2.0,
            )
        ],
        network_io=[
            NetIO(
                interface="vnet0",
                rx_bytes=RX_MARK,
                tx_bytes=TX_MARK,
                rx_bps=1e3,
                tx_bps=2e3,
            )
        ],
        interval_s=interval,
    )


class BatchTemplate:
    """One host's `MetricsBatch`, serialised once by the shared model, then patched per tick."""

    def __init__(self, batch: MetricsBatch) -> None:
        text = dump(batch.model_copy(update={"tick": TICK_MARK})).decode()
        text = text.replace(iso_z(batch.ts), TS_MARK)
        for vm in batch.vms:
            text = text.replace(iso_z(vm.ts), TS_MARK)
        parts = SLOT_RE.split(text)
        self.literals = parts[0::2]
        self.slots = [("ts" if p.startswith('"') else SLOTS[p]) for p in parts[1::2]]
        self.vms = len(batch.vms)

    def render(self, tick: int, now: float) -> bytes:
        ts = '"' + iso_z(datetime.fromtimestamp(now, UTC)) + '"'
        out: list[str] = []
        vm = -1
        for literal, slot in zip(self.literals, self.slots, strict=False):
            out.append(literal)
            if slot == "ts":
                out.append(ts)
            elif slot == "tick":
                out.append(str(tick))
            elif slot == "cpu":
                vm += 1
                out.append(repr(((tick * 37 + vm * 11) % 1000) / 10))
            else:
                base = {"rb": 1, "wb": 2, "rx": 3, "tx": 4}[slot]
                out.append(str(base * 10**9 + tick * (4096 + vm)))
        out.append(self.literals[-1])
        return "".join(out).encode()


class SimHost:
    """One simulated agent: its VMs, its MQTT client, its command memory."""

    def __init__(self, fleet: Fleet, index: int, topics: Topics, stats: Stats) -> None:
        self.fleet = fleet
        self.host = fleet.host_id(index)
        self.topics = topics
        self.stats = stats
        self.started_at = utc_now()
        self.tick = 0
        self.vms: dict[str, VmState] = {}
        for v in range(fleet.vms):
            state: VmStateName = "running" if v % 10 else "stopped"
            self.vms[fleet.vm_uuid(index, v)] = self._state(
                fleet.vm_uuid(index, v), fleet.vm_name(index, v), state
            )
        self.template = self._template()
        self.replies: OrderedDict[str, CommandReply] = OrderedDict()
        self.connected = False
        self.retry_at = 0.0
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sim-{self.host}", protocol=mqtt.MQTTv5
        )
        client.will_set(
            *self._wire("host_status", topics.host_status(self.host), self.status(False))
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.suppress_exceptions = True
        self.client = client

    # -- payloads ------------------------------------------------------------------------------
    def _state(self, uuid: str, name: str, state: VmStateName) -> VmState:
        return VmState(
            host=self.host,
            uuid=uuid,
            name=name,
            state=state,
            reason=REASON.get(state, "unknown"),
            is_active=state in ACTIVE_STATES,
            vcpus=2,
            memory_mb=1024,
            max_memory_mb=1024,
            autostart=False,
            persistent=True,
            seq=time.time_ns() // 1000,  # a microsecond clock, as the agent's seq
        )

    def status(self, online: bool) -> HostStatus:
        if not online:
            return HostStatus(host=self.host, online=False)
        return HostStatus(
            host=self.host,
            online=True,
            agent_version="simulated",
            libvirt_connected=True,
            libvirt_uri="test:///simulated",
            hypervisor=Hypervisor(type="QEMU", version="8.2.0"),
            node=NodeInfo(cpus=64, memory_mb=262144, model="x86_64"),
            interval_s=self.fleet.interval,
            started_at=self.started_at,
        )

    def _template(self) -> BatchTemplate:
        vms = list(self.vms.values())
        running = [vm for vm in vms if vm.state == "running"]
        batch = MetricsBatch(
            host=self.host,
            interval_s=self.fleet.interval,
            tick=0,
            host_metrics=HostMetrics(
                cpu_percent=30.0,
                cpus=64,
                memory_total_mb=262144,
                memory_free_mb=131072,
                vms_total=len(vms),
                vms_running=len(running),
                vcpus_allocated=sum(vm.vcpus for vm in running),
                memory_allocated_mb=sum(vm.memory_mb for vm in running),
            ),
            vms=[
                _tmpl_vm(self.host, vm.uuid, vm.name, vm.state, self.fleet.interval) for vm in vms
            ],
        )
        return BatchTemplate(batch)

    @staticmethod
    def _wire(kind: TopicKind, topic: str, model: Any) -> tuple[str, bytes, int, bool]:
        policy = POLICY[kind]
        return topic, dump(model) if model is not None else b"", policy.qos, policy.retain

    def send(self, kind: TopicKind, topic: str, model: Any, corr: bytes | None = None) -> None:
        topic, payload, qos, retain = self._wire(kind, topic, model)
        props = None
        if corr is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = corr
        self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)

    # -- the tick ------------------------------------------------------------------------------
    def publish_metrics(self, now: float, validate: bool) -> None:
        if not self.connected:
            return
        self.tick += 1
        payload = self.template.render(self.tick, now)
        if validate:
            batch = MetricsBatch.model_validate_json(payload)
            assert batch.host == self.host and batch.tick == self.tick
            assert len(batch.vms) == self.fleet.vms, "template lost VMs"
        self.client.publish(self.topics.host_metrics(self.host), payload, qos=0, retain=False)
        self.stats.batches += 1
        self.stats.vm_metrics += self.template.vms
        self.stats.bytes += len(payload)

    # -- paho callbacks (the process's one loop thread) ----------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            return
        self.send("host_status", self.topics.host_status(self.host), self.status(True))
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        client.subscribe(
            [
                (self.topics.cmd(self.host), options),
                (f"{self.topics.root}/{self.host}/vm/+/set", options),
            ]
        )
        for vm in self.vms.values():
            self.send("vm_state", self.topics.vm_state(self.host, vm.uuid), vm)
            self.stats.states += 1
        self.connected = True
        self.stats.connects += 1

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
        self.connected = False
        self.retry_at = time.monotonic() + 1.0

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            parsed = self.topics.parse(msg.topic)
            if parsed is None:
                return
            props = msg.properties
            if parsed.kind == "cmd":
                self.on_command(
                    bytes(msg.payload),
                    bool(msg.retain),
                    getattr(props, "ResponseTopic", None) if props else None,
                    getattr(props, "CorrelationData", None) if props else None,
                )
            elif parsed.kind == "vm_set" and parsed.uuid and not msg.retain:
                decoded = decode_set(
                    bytes(msg.payload), parsed.uuid, f"set-{time.time_ns()}", utc_now()
                )
                if isinstance(decoded, Rejection):
                    self.outcome(None, self.rejected(decoded))
                else:
                    self.run(decoded, None)
        except Exception as exc:  # a bad message must not stop the whole process's hosts
            print(f"simulate_hosts: {self.host}: message failed: {exc!r}", file=sys.stderr)

    # -- commands, as agent/commands/intake.py and agent/commands/executor.py answer them --------
    def on_command(
        self, payload: bytes, retain: bool, response: str | None, corr: bytes | None
    ) -> None:
        self.stats.commands += 1
        if not valid_response_topic(response, self.topics.reply_prefix(self.host)):
            self.event(
                kind="command",
                event="refused",
                status="rejected",
                error=ErrorInfo(code="bad_response_topic", message="response topic refused"),
            )
            return
        assert response is not None

        def reply(r: CommandReply) -> None:
            self.send("reply", response, r, corr if corr is not None else (r.id or "").encode())

        if retain:
            rej = Rejection("retained", "retained commands are ignored", correlation_text(corr))
            reply(self.rejected(rej))
            return
        decoded = decode_command(payload, corr, utc_now())
        if not isinstance(decoded, Rejection) and decoded.not_after is None:
            # SPEC §3: `not_after` is required.
            decoded = Rejection(
                "bad_request", "not_after is required", decoded.id, decoded.action, decoded.vm
            )
        if isinstance(decoded, Rejection):
            r = self.rejected(decoded)
            reply(r)
            self.outcome(None, r)
            return
        self.run(decoded, reply)

    def rejected(self, rej: Rejection) -> CommandReply:
        reply = CommandReply(
            id=rej.id,
            host=self.host,
            status="rejected",
            action=rej.action,
            vm=rej.vm,
            error=rej.error,
        )
        if rej.id is not None and rej.code not in ("bad_request", "too_large"):
            self.remember(reply)
        return reply

    def remember(self, reply: CommandReply) -> None:
        if reply.id is None:
            return
        self.replies[reply.id] = reply
        self.replies.move_to_end(reply.id)
        while len(self.replies) > 2048:
            self.replies.popitem(last=False)

    def run(self, req: CommandRequest, reply: Any) -> None:
        seen = self.replies.get(req.id)
        if seen is not None:  # a repeated id gets the cached reply, never a second run
            if reply is not None:
                reply(seen)
            return
        vm = self.vms.get(req.vm)
        if vm is None:
            rej = Rejection(
                "vm_not_found", f"no VM {req.vm} on {self.host}", req.id, req.action, req.vm
            )
            r = self.rejected(rej)
            if reply is not None:
                reply(r)
            self.outcome(req, r)
            return
        base = {"id": req.id, "host": self.host, "action": req.action, "vm": vm.uuid}
        accepted = CommandReply(**base, status="accepted", name=vm.name, state=vm.state)
        self.remember(accepted)
        if reply is not None:
            reply(accepted)
        before = vm.state
        if before in TARGET.get(req.action, ()):
            final = CommandReply(
                **base, status="succeeded", name=vm.name, state=before, changed=False
            )
        elif before not in ALLOWED_FROM[req.action]:
            final = CommandReply(
                **base,
                status="failed",
                name=vm.name,
                state=before,
                error=ErrorInfo(
                    code="invalid_state", message=f"cannot {req.action} a VM that is {before}"
                ),
            )
        else:
            after = RESULT[req.action]
            self.set_state(vm, after, LIFECYCLE[req.action])
            final = CommandReply(
                **base, status="succeeded", name=vm.name, state=after, changed=True
            )
        self.remember(final)
        if reply is not None:
            reply(final)
        self.outcome(req, final)

    def set_state(self, vm: VmState, state: VmStateName, event: str) -> None:
        new = self._state(vm.uuid, vm.name, state)
        self.vms[vm.uuid] = new
        self.send("vm_state", self.topics.vm_state(self.host, vm.uuid), new)
        self.stats.states += 1
        self.event(kind="lifecycle", uuid=vm.uuid, name=vm.name, event=event, state=state)
        if vm.state != state:  # the batch carries each VM's state and the running count
            self.template = self._template()

    def outcome(self, req: CommandRequest | None, r: CommandReply) -> None:
        self.event(
            kind="command",
            uuid=r.vm,
            name=r.name,
            event=r.action or "command",
            state=r.state,
            id=r.id,
            action=r.action,
            status=r.status,
            by=req.by if req else None,
            error=r.error,
        )

    def event(self, **fields: Any) -> None:
        self.send(
            "host_events", self.topics.host_events(self.host), VmEvent(host=self.host, **fields)
        )


@dataclass
class Stats:
    batches: int = 0
    vm_metrics: int = 0
    bytes: int = 0
    states: int = 0
    commands: int = 0
    connects: int = 0


class Loop:
    """Every host of one process on one selector; ticks spread evenly over the interval."""

    def __init__(self, hosts: list[SimHost], fleet: Fleet, validate_every: int) -> None:
        self.hosts = hosts
        self.fleet = fleet
        self.validate_every = validate_every
        self.sel = selectors.DefaultSelector()
        for host in hosts:
            c = host.client
            c.on_socket_open = self._opened
            c.on_socket_close = self._closed
            c.on_socket_register_write = self._want_write
            c.on_socket_unregister_write = self._wrote

    def _opened(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        self.sel.register(sock, selectors.EVENT_READ, client)

    def _closed(self, _client: mqtt.Client, _u: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(sock)

    def _want_write(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _wrote(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(sock, selectors.EVENT_READ, client)

    def connect_all(self, host: str, port: int) -> None:
        for h in self.hosts:
            try:
                h.client.connect(host, port, keepalive=60)
            except OSError as exc:
                print(f"simulate_hosts: {h.host}: connect failed: {exc}", file=sys.stderr)
                h.retry_at = time.monotonic() + 1.0
            self.poll(0)  # take CONNACKs as they come: the broker's backlog stays short

    def poll(self, timeout: float) -> None:
        for key, mask in self.sel.select(timeout):
            client: mqtt.Client = key.data
            if mask & selectors.EVENT_READ:
                client.loop_read()
            if mask & selectors.EVENT_WRITE:
                client.loop_write()

    def run(self, stop: Any, report: Any, index: int) -> None:
        n = len(self.hosts)
        start = time.monotonic()
        # Host i of this process ticks at phase i/n of the interval (plus the process's offset).
        due = [(start + self.fleet.interval * (i + index * 0.37) / max(n, 1), i) for i in range(n)]
        heapq.heapify(due)
        next_misc = next_report = start
        stats = self.hosts[0].stats
        ticks = 0
        parent = os.getppid()
        # A parent killed with -9 sets no stop event: orphaned hosts stop by themselves.
        while not stop.is_set() and os.getppid() == parent:
            now = time.monotonic()
            while due and due[0][0] <= now:
                at, i = heapq.heappop(due)
                ticks += 1
                self.hosts[i].publish_metrics(time.time(), ticks % self.validate_every == 1)
                # Late ticks are skipped forward, never bunched (as the agent's ticker does).
                nxt = at + self.fleet.interval
                heapq.heappush(due, (max(nxt, now), i))
            if now >= next_misc:
                next_misc = now + 1.0
                for h in self.hosts:
                    h.client.loop_misc()
                    if not h.connected and h.retry_at and now >= h.retry_at:
                        h.retry_at = now + 2.0
                        with contextlib.suppress(OSError):
                            h.client.reconnect()
            if now >= next_report:
                next_report = now + 1.0
                usage = resource.getrusage(resource.RUSAGE_SELF)
                connected = sum(h.connected for h in self.hosts)
                report.put(
                    (
                        index,
                        {**stats.__dict__, "connected": connected},
                        usage.ru_utime + usage.ru_stime,
                    )
                )
            wait = min(due[0][0] if due else now + 0.5, next_misc, next_report) - time.monotonic()
            self.poll(max(0.0, min(wait, 0.5)))

    def farewell(self, clear: bool) -> None:
        for h in self.hosts:
            if not h.connected:
                continue
            if clear:
                for uuid in h.vms:
                    h.send("vm_state", h.topics.vm_state(h.host, uuid), None)
            h.send("host_status", h.topics.host_status(h.host), h.status(False))
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and any(h.client.want_write() for h in self.hosts):
            self.poll(0.05)
        for h in self.hosts:
            h.client.disconnect()
        self.poll(0.1)


def child(
    fleet: Fleet,
    indices: list[int],
    broker: str,
    validate_every: int,
    clear: bool,
    stop: Any,
    report: Any,
    index: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    url = urlsplit(broker)
    topics = Topics(fleet.prefix)
    stats = Stats()
    hosts = [SimHost(fleet, i, topics, stats) for i in indices]
    # Each host's first batch is checked against the shared model before anything is sent.
    for h in hosts:
        MetricsBatch.model_validate_json(h.template.render(1, time.time()))
    loop = Loop(hosts, fleet, validate_every)
    loop.connect_all(url.hostname or "127.0.0.1", url.port or 1883)
    try:
        loop.run(stop, report, index)
    finally:
        loop.farewell(clear)


def totals(latest: dict[int, tuple[dict[str, int], float]]) -> dict[str, Any]:
    keys = next(iter(latest.values()))[0]
    out: dict[str, Any] = {k: sum(c[k] for c, _ in latest.values()) for k in keys}
    out["sim_cpu_s"] = round(sum(cpu for _, cpu in latest.values()), 3)
    return out


def is_ready(latest: dict[int, tuple[dict[str, int], float]], args: argparse.Namespace) -> bool:
    total = totals(latest)
    return bool(total["connected"] == args.hosts and total["states"] >= args.hosts * args.vms)


def print_totals(
    latest: dict[int, tuple[dict[str, int], float]],
    args: argparse.Namespace,
    nproc: int,
    ready: bool,
) -> None:
    if not ready and is_ready(latest, args):
        line = {"ready": True, "hosts": args.hosts, "vms": args.hosts * args.vms}
        print(json.dumps({**line, "processes": nproc, "cores": os.cpu_count()}), flush=True)
    print(json.dumps({"t": round(time.time(), 3), **totals(latest)}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port")
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--vms", type=int, default=100, help="VMs per host")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between batches")
    parser.add_argument("--processes", type=int, default=2, help="hosts are spread over these")
    parser.add_argument("--prefix", default="kvmsup", help="topic prefix")
    parser.add_argument("--host-prefix", default="sim", help="host ids are <this>-0000, ...")
    parser.add_argument("--duration", type=float, default=0, help="seconds; 0 = until SIGTERM")
    parser.add_argument(
        "--validate-every", type=int, default=50, help="check every Nth batch with MetricsBatch"
    )
    parser.add_argument(
        "--clear", action="store_true", help="delete the retained VM states on exit"
    )
    args = parser.parse_args()
    fleet = Fleet(args.hosts, args.vms, args.interval, args.prefix, args.host_prefix)
    Topics(fleet.prefix).host_status(fleet.host_id(0))  # refuses a bad prefix or host id early

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    report: Any = ctx.Queue()
    procs = []
    nproc = max(1, min(args.processes, args.hosts))
    for p in range(nproc):
        indices = list(range(p, args.hosts, nproc))
        procs.append(
            ctx.Process(
                target=child,
                args=(
                    fleet,
                    indices,
                    args.broker,
                    args.validate_every,
                    args.clear,
                    stop,
                    report,
                    p,
                ),
                daemon=True,
            )
        )
    stopping = False

    def on_signal(_sig: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for proc in procs:
        proc.start()
    latest: dict[int, tuple[dict[str, int], float]] = {}
    start = time.monotonic()
    next_line = start + 1.0
    ready = False
    try:
        while not stopping and all(p.is_alive() for p in procs):
            if args.duration and time.monotonic() - start >= args.duration:
                break
            try:
                idx, counts, cpu = report.get(timeout=0.2)
                latest[idx] = (counts, cpu)
            except queue.Empty:
                pass
            if len(latest) < nproc or time.monotonic() < next_line:
                continue
            next_line += 1.0
            print_totals(latest, args, nproc, ready)
            ready = ready or is_ready(latest, args)
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=8)
            if proc.is_alive():
                proc.kill()
    return 0 if all(p.exitcode in (0, None) for p in procs) else 1


if __name__ == "__main__":
    sys.exit(main())
