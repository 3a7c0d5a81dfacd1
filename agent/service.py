"""Wires the agent: libvirt events → inventory → MQTT; MQTT commands → executor; the tick loop."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from pydantic import BaseModel

from agent import __version__, discovery, domstate
from agent.bulkstats import RawSample
from agent.bus import Bus, Inbound, Outbound
from agent.commands import CommandExecutor
from agent.config import AgentSettings
from agent.discovery import DISCOVERY_QOS, DISCOVERY_RETAIN
from agent.errors import AgentError, DomainNotFound
from agent.homeassistant import HomeAssistantPublisher
from agent.hypervisor import Hypervisor, HypervisorEvent, NodeFacts
from agent.inventory import Inventory
from agent.requests import Rejection, decode_command, decode_set, valid_response_topic
from agent.sampler import NodeReading, Sampler
from shared.messages import (
    CommandReply,
    CommandRequest,
    HostStatus,
    MetricsBatch,
    NodeInfo,
    VmEvent,
    VmState,
    dump,
    utc_now,
)
from shared.messages import (
    Hypervisor as HypervisorInfo,
)
from shared.topics import POLICY, TopicKind, Topics

logger = logging.getLogger(__name__)

_MQTT_CONNECTED = Inbound("", b"", False)  # marker queued by the bus after every CONNACK


def guarded(name: str, fn: Callable[[], object]) -> Callable[[], None]:
    """A thread body that logs and survives every exception of one iteration (STYLE 5)."""

    def run() -> None:
        try:
            fn()
        except Exception:
            logger.exception("%s failed", name)

    return run


class AgentService:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.host = settings.host_id
        self.topics = Topics(settings.topic_prefix)
        self.started_at = utc_now()
        self._stop = threading.Event()
        self._hv_events: queue.Queue[HypervisorEvent] = queue.Queue()
        self._inbound: queue.Queue[Inbound] = queue.Queue(maxsize=10_000)
        self.hypervisor = Hypervisor(settings.libvirt_uri, self._hv_events)
        self.inventory = Inventory(self.host)
        self.sampler = Sampler(self.host, settings.memory_stats_period)
        self.executor = CommandExecutor(
            self.host,
            self.hypervisor,
            self.inventory,
            self._command_outcome,
            on_change=self._request_refresh,
            workers=settings.command_workers,
        )
        self._node: NodeFacts | None = None
        self._broker_retained: set[str] = set()
        self._retained_lock = threading.Lock()
        self._sampling = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sampler")
        self._pending_sample: Future[tuple[list[RawSample], NodeReading]] | None = None
        self.tick = 0
        subs = [(t, t.endswith("/state")) for t in self.topics.agent_subscriptions(self.host)]
        self.ha: HomeAssistantPublisher | None = None
        if settings.ha_discovery:
            self.ha = HomeAssistantPublisher(
                self.host,
                self.topics,
                settings.ha_prefix,
                settings.metrics_interval,
                settings.vm_metrics_every,
                self._publish_discovery,
            )
            subs.append((self.ha.status_topic, False))
        self.bus = Bus(
            settings,
            client_id=f"kvmsup-agent-{self.host}",
            will=self._outbound(
                "host_status",
                self.topics.host_status(self.host),
                HostStatus(host=self.host, online=False),
            ),
            online=lambda: self._status_message(online=True),
            subscriptions=subs,
            on_message=self._enqueue,
            on_connected=lambda: self._enqueue(_MQTT_CONNECTED),
        )
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        logger.info(
            "agent %s starting: libvirt %s, broker %r, prefix %s",
            self.host,
            self.settings.public_libvirt_uri(),
            self.settings.mqtt,
            self.settings.topic_prefix,
        )
        self.hypervisor.start()
        self.bus.start()
        for name, body in (
            ("hypervisor-events", self._hypervisor_events),
            ("mqtt-dispatch", self._dispatch),
            ("ticker", self._ticker),
        ):
            thread = threading.Thread(target=body, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        logger.info("agent %s stopping", self.host)
        self._stop.set()
        self.bus.stop(farewell=self._status_message(online=False))
        self.executor.shutdown()
        self._sampling.shutdown(wait=False, cancel_futures=True)
        self.hypervisor.stop()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stop.wait(timeout)

    # -- publishing -------------------------------------------------------------------------
    @staticmethod
    def _outbound(kind: TopicKind, topic: str, model: BaseModel | None) -> Outbound:
        policy = POLICY[kind]
        return Outbound(topic, dump(model) if model is not None else b"", policy.qos, policy.retain)

    def _publish(self, kind: TopicKind, topic: str, model: BaseModel | None) -> None:
        self.bus.publish(self._outbound(kind, topic, model))

    def _status_message(self, online: bool) -> Outbound:
        node = self._node
        status = HostStatus(
            host=self.host,
            online=online,
            agent_version=__version__,
            # Connected and resynced: an MQTT connect between the two must not announce
            # libvirt as up with no node facts yet (the resync republishes the status).
            libvirt_connected=self.hypervisor.connected and self.inventory.synced,
            libvirt_uri=self.settings.public_libvirt_uri(),
            hypervisor=HypervisorInfo(type=node.hypervisor_type, version=node.hypervisor_version)
            if node
            else None,
            node=NodeInfo(cpus=node.cpus, memory_mb=node.memory_mb, model=node.model)
            if node
            else None,
            interval_s=self.settings.metrics_interval,
            started_at=self.started_at,
        )
        return self._outbound("host_status", self.topics.host_status(self.host), status)

    def _publish_state(self, state: VmState) -> None:
        self._publish("vm_state", self.topics.vm_state(self.host, state.uuid), state)
        if self.ha is not None:
            self.ha.vm_changed(state)

    def _clear_state(self, uuid: str) -> None:
        self._publish("vm_state", self.topics.vm_state(self.host, uuid), None)
        if self.ha is not None:
            self.ha.vm_removed(uuid)

    def _publish_discovery(self, topic: str, payload: bytes) -> None:
        self.bus.publish(Outbound(topic, payload, DISCOVERY_QOS, DISCOVERY_RETAIN))

    def _send_discovery(self) -> None:
        if self.ha is not None and self.inventory.synced:
            status = HostStatus.model_validate_json(self._status_message(online=True).payload)
            self.ha.publish_all(status, self.inventory.all())

    def _event(self, **fields: object) -> None:
        self._publish(
            "host_events", self.topics.host_events(self.host), VmEvent(host=self.host, **fields)
        )

    # -- libvirt side (one worker: the only place that turns events into published state) ---
    def _hypervisor_events(self) -> None:
        while not self._stop.is_set():
            try:
                ev = self._hv_events.get(timeout=0.5)
            except queue.Empty:
                continue
            guarded(f"libvirt event {ev.kind}", partial(self._on_hypervisor_event, ev))()

    def _request_refresh(self, uuid: str) -> None:
        """Re-read one VM on the event worker and publish it if it changed."""
        self._hv_events.put(HypervisorEvent("lifecycle", uuid, None))

    def _on_hypervisor_event(self, ev: HypervisorEvent) -> None:
        if ev.kind == "connected":
            self._resync()
        elif ev.kind == "disconnected":
            self.inventory.synced = False
            self.sampler.reset()
            self.bus.publish(self._status_message(online=True))
            self._event(kind="agent", event="libvirt_disconnected")
        elif ev.kind == "reboot" and ev.uuid:
            vm = self.inventory.get(ev.uuid)
            self._event(
                kind="reboot",
                uuid=ev.uuid,
                name=ev.name,
                event="rebooted",
                state=vm.state if vm else None,
            )
        elif ev.kind == "lifecycle" and ev.uuid:
            self._on_lifecycle(ev)

    def _on_lifecycle(self, ev: HypervisorEvent) -> None:
        assert ev.uuid is not None
        name = domstate.event_name(ev.event) if ev.event >= 0 else "changed"
        renaming = ev.event == domstate.EVENT_UNDEFINED and ev.detail == domstate.UNDEFINED_RENAMED
        if ev.event == domstate.EVENT_UNDEFINED and not renaming:
            self._undefined(ev.uuid, ev.name)
            return
        try:
            info = self.hypervisor.domain_info(ev.uuid)
        except DomainNotFound:
            if not renaming:  # the DEFINED(renamed) event that follows brings the new name
                self._undefined(ev.uuid, ev.name)  # a transient domain that stopped is gone
            return
        state = self.inventory.update(info, force=ev.event >= 0)
        if state is None:
            return
        self._publish_state(state)
        self._event(
            kind="lifecycle",
            uuid=state.uuid,
            name=state.name,
            event=name,
            detail=str(ev.detail) if ev.event >= 0 else "refreshed",
            state=state.state,
        )
        if ev.event == 2 and self.settings.memory_stats_period > 0:  # started
            self.hypervisor.set_memory_stats_period(ev.uuid, self.settings.memory_stats_period)

    def _undefined(self, uuid: str, name: str | None) -> None:
        old = self.inventory.remove(uuid)
        self._clear_state(uuid)
        if old is not None or name:
            self._event(
                kind="lifecycle", uuid=uuid, name=old.name if old else name, event="undefined"
            )

    def _resync(self) -> None:
        """After every (re)connection: node facts, every VM republished, vanished ones cleared."""
        self._node = self.hypervisor.node_facts()
        infos = self.hypervisor.list_domains()
        states, gone = self.inventory.replace_all(infos)
        self.sampler.reset()
        for state in states:
            self._publish_state(state)
        for old in gone:
            self._clear_state(old.uuid)
            self._event(
                kind="lifecycle",
                uuid=old.uuid,
                name=old.name,
                event="undefined",
                detail="vanished while disconnected",
            )
        self.bus.publish(self._status_message(online=True))
        self._event(kind="agent", event="libvirt_connected", detail=f"{len(states)} VMs")
        self._clear_orphans()
        self._send_discovery()
        if self.settings.memory_stats_period > 0:
            for state in states:
                if state.is_active:
                    self.hypervisor.set_memory_stats_period(
                        state.uuid, self.settings.memory_stats_period
                    )
        logger.info("resynced %d VMs (%d vanished)", len(states), len(gone))

    def _clear_orphans(self) -> None:
        """Retained states on the broker for VMs libvirt no longer has (SPEC §3, PITFALLS 16)."""
        if not self.inventory.synced:
            return
        known = self.inventory.uuids()
        with self._retained_lock:
            orphans = self._broker_retained - known
            self._broker_retained -= orphans
        for uuid in orphans:
            logger.info("clearing the retained state of vanished VM %s", uuid)
            self._clear_state(uuid)

    # -- MQTT side (one dispatcher; never calls libvirt) ------------------------------------
    def _enqueue(self, msg: Inbound) -> None:
        try:
            self._inbound.put_nowait(msg)
        except queue.Full:
            logger.error("inbound queue full: dropped a message on %s", msg.topic)

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._inbound.get(timeout=0.5)
            except queue.Empty:
                continue
            guarded(f"message on {msg.topic!r}", partial(self._on_inbound, msg))()

    def _on_inbound(self, msg: Inbound) -> None:
        if msg is _MQTT_CONNECTED:
            if self.inventory.synced:
                for state in self.inventory.all():
                    self._publish_state(state)
            self._send_discovery()
            return
        if self.ha is not None and msg.topic == self.ha.status_topic:
            if discovery.is_ha_online(msg.payload) and not msg.retain:
                self._send_discovery()
            elif discovery.is_ha_online(msg.payload):
                logger.debug("Home Assistant online (retained): configs already sent on connect")
            return
        parsed = self.topics.parse(msg.topic)
        if parsed is None or parsed.host != self.host:
            logger.debug("ignored message on %s", msg.topic)
            return
        if parsed.kind == "cmd":
            self._on_command(msg)
        elif parsed.kind == "vm_set" and parsed.uuid:
            self._on_set(parsed.uuid, msg)
        elif parsed.kind == "vm_state" and parsed.uuid and msg.retain and msg.payload:
            with self._retained_lock:
                self._broker_retained.add(parsed.uuid)
            self._clear_orphans()

    def _on_command(self, msg: Inbound) -> None:
        if not valid_response_topic(msg.response_topic, self.topics.reply_prefix(self.host)):
            logger.warning(
                "command refused: response topic %r is not under %s (payload %r)",
                msg.response_topic,
                self.topics.reply_prefix(self.host),
                msg.payload[:256],
            )
            self._event(
                kind="command",
                event="refused",
                status="rejected",
                error={
                    "code": "bad_response_topic",
                    "message": f"response topic {str(msg.response_topic)[:128]!r} refused",
                },
            )
            return
        response_topic = msg.response_topic
        assert response_topic is not None

        def send(reply: CommandReply) -> None:
            corr = msg.correlation if msg.correlation is not None else (reply.id or "").encode()
            self.bus.publish(Outbound(response_topic, dump(reply), 1, False), correlation=corr)

        if msg.retain:
            logger.warning("ignored a retained command on %s: %r", msg.topic, msg.payload[:256])
            self.executor.reject(
                Rejection("retained", "retained commands are ignored", _corr_text(msg.correlation)),
                send,
            )
            return
        decoded = decode_command(msg.payload, msg.correlation, utc_now())
        if isinstance(decoded, Rejection):
            logger.warning(
                "bad command on %s: %s; payload %r", msg.topic, decoded.message, msg.payload[:256]
            )
            self.executor.reject(decoded, send)
        else:
            self.executor.submit(decoded, send)

    def _on_set(self, uuid: str, msg: Inbound) -> None:
        if msg.retain:
            logger.warning("ignored a retained set on %s: %r", msg.topic, msg.payload[:256])
            return
        decoded = decode_set(msg.payload, uuid, f"set-{time.time_ns()}", utc_now())
        if isinstance(decoded, Rejection):
            logger.warning("bad set on %s: %s", msg.topic, decoded.message)
            self.executor.reject(decoded, None)
        else:
            self.executor.submit(decoded, None)

    def _command_outcome(self, request: CommandRequest | None, reply: CommandReply) -> None:
        self._event(
            kind="command",
            uuid=reply.vm,
            name=reply.name,
            event=reply.action or "command",
            state=reply.state,
            id=reply.id,
            action=reply.action,
            status=reply.status,
            by=request.by if request else None,
            error=reply.error,
        )

    # -- the tick ---------------------------------------------------------------------------
    def _ticker(self) -> None:
        interval = self.settings.metrics_interval
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += interval
            guarded("metrics tick", self.run_tick)()
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind: skip ticks rather than bunching them
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def run_tick(self) -> MetricsBatch | None:
        """Samples every VM with one bulk call and publishes the batch (one per tick)."""
        if not (self.hypervisor.connected and self.inventory.synced):
            return None
        read = self._sample_with_deadline()
        if read is None:
            return None
        samples, reading = read
        self.tick += 1
        self._reconcile(samples)
        known = {s.uuid: s for s in self.inventory.all()}
        vms = self.sampler.vm_metrics(samples, known)
        batch = MetricsBatch(
            host=self.host,
            interval_s=self.settings.metrics_interval,
            tick=self.tick,
            host_metrics=self.sampler.host_metrics(vms, list(known.values()), reading),
            vms=vms,
        )
        self._publish("host_metrics", self.topics.host_metrics(self.host), batch)
        if self.tick % self.settings.vm_metrics_every == 0:
            for vm in vms:
                self._publish("vm_metrics", self.topics.vm_metrics(self.host, vm.uuid), vm)
        return batch

    def _read_hypervisor(self) -> tuple[list[RawSample], NodeReading]:
        """Every libvirt call of a tick, so all of them run under the tick's deadline."""
        samples = self.hypervisor.sample()
        return samples, self._node_reading(
            self.hypervisor.node_free_memory_mb(), self.hypervisor.node_cpu_stats()
        )

    def _node_reading(self, free_mb: int | None, cpu_stats: dict[str, int] | None) -> NodeReading:
        node = self._node
        return NodeReading(
            cpus=node.cpus if node else None,
            memory_total_mb=node.memory_mb if node else None,
            memory_free_mb=free_mb,
            cpu_stats=cpu_stats,
        )

    def _sample_with_deadline(self) -> tuple[list[RawSample], NodeReading] | None:
        """A hung libvirtd must not stall the tick: wait one interval, then report stale."""
        if self._pending_sample is None or self._pending_sample.done():
            self._pending_sample = self._sampling.submit(self._read_hypervisor)
        try:
            return self._pending_sample.result(timeout=max(1.0, self.settings.metrics_interval))
        except TimeoutError:
            logger.warning("libvirt stats did not come back within the tick: VMs reported stale")
            now = time.monotonic_ns()
            return [
                RawSample(
                    uuid=s.uuid,
                    name=s.name,
                    state=_state_code(s.state),
                    reason=0,
                    taken_ns=now,
                    stale=True,
                )
                for s in self.inventory.all()
            ], self._node_reading(None, None)
        except AgentError as exc:
            logger.warning("sampling failed: %s", exc)
            return None

    def _reconcile(self, samples: list[RawSample]) -> None:
        """A missed lifecycle event still shows in the next tick: queue a refresh for it."""
        seen = set()
        for raw in samples:
            seen.add(raw.uuid)
            known = self.inventory.get(raw.uuid)
            if raw.stale:
                continue
            if known is None or _differs(known, raw):
                self._hv_events.put(HypervisorEvent("lifecycle", raw.uuid, raw.name))
        for uuid in self.inventory.uuids() - seen:
            self._hv_events.put(HypervisorEvent("lifecycle", uuid, None))


def _differs(known: VmState, raw: RawSample) -> bool:
    """What a tick can see changed without an event: state, name, vCPUs, memory."""
    if known.name != raw.name or known.vcpus != (raw.vcpus or known.vcpus):
        return True
    if raw.max_memory_kib and known.max_memory_mb != raw.max_memory_kib // 1024:
        return True
    current = raw.balloon.current_kib
    if current and known.memory_mb != current // 1024:
        return True
    # A shutdown in progress is shown as shutting_down while libvirt still says running.
    return known.state != domstate.state_name(raw.state) and known.reason != "shutdown requested"


def _state_code(state: str) -> int:
    for code, name in domstate.STATE_NAMES.items():
        if name == state:
            return code
    return 0


def _corr_text(data: bytes | None) -> str | None:
    return data.decode("utf-8", "replace")[:128] if data is not None else None
