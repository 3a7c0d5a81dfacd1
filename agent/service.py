"""Wires the agent and runs its threads: libvirt events → inventory → MQTT; MQTT → commands; tick.
Publishing is `publisher.py`'s, the tick `tick/`'s, requests `commands/`'; this module owns the
three worker threads and what each does with its queue."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, TypeVar

from agent import domstate
from agent.bus import Bus, Outbound
from agent.commands.executor import CommandExecutor
from agent.commands.intake import Intake
from agent.commands.settings import ExecutorSettings
from agent.config import AgentSettings
from agent.errors import AgentError, DomainNotFound
from agent.guest.watcher import GuestWatcher
from agent.homeassistant.discovery import DISCOVERY_QOS
from agent.homeassistant.sync import HomeAssistantPublisher
from agent.hypervisor import Hypervisor, HypervisorEvent
from agent.hypervisor.callpool import CallPool
from agent.inbound import CONNECTED, InboundRouter, keep_going
from agent.inventory import Inventory
from agent.publisher import Publisher, outbound
from agent.tick.sampler import Sampler
from agent.tick.ticker import Ticker, next_deadline
from shared.messages import HostStatus, MetricsBatch, utc_now
from shared.topics import Topics

logger = logging.getLogger(__name__)

# The event worker's own libvirt reads give up after this: a `disconnected` queued behind a
# read hung on a frozen libvirtd would otherwise reach the status topic only after the thaw.
EVENT_CALL_TIMEOUT_S = 5.0
# The resync's listing makes several RPCs per VM: its deadline grows with the VM count, so a
# large or remote host is listed in full instead of timing out (and retrying) for ever.
RESYNC_BASE_S = 10.0
RESYNC_PER_VM_S = 0.25
# A failed resync is retried on the same connection after this, doubling up to the maximum;
# the connection's own probe decides whether libvirtd is gone.
RESYNC_RETRY_S = 1.0
RESYNC_RETRY_MAX_S = 60.0

T = TypeVar("T")


@dataclass(frozen=True)
class Republish:
    """The service's own request after every MQTT connect (the broker may have lost every retained
    state): queued behind libvirt's events, so one worker publishes every state, in order."""

    kind: ClassVar[str] = "republish"


EventWork = HypervisorEvent | Republish


class AgentService:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.host = settings.host_id
        self.topics = Topics(settings.topic_prefix)
        self.started_at = utc_now()
        self._stop = threading.Event()
        self._event_calls = CallPool(2)
        self._resync_retry = RESYNC_RETRY_S
        self._hv_events: queue.Queue[EventWork] = queue.Queue(maxsize=10_000)
        self.hypervisor = Hypervisor(settings.libvirt_uri, self._hv_events)
        self.inventory = Inventory(self.host)
        self.sampler = Sampler(self.host, settings.memory_stats_period)
        subs = [(t, t.endswith("/state")) for t in self.topics.agent_subscriptions(self.host)]
        self.ha = self._home_assistant(settings) if settings.ha_discovery else None
        if self.ha is not None:
            subs.append((self.ha.status_topic, False))
        self.bus = self._bus(settings, subs)
        self.publisher = Publisher(
            settings,
            self.topics,
            self.bus,
            self.hypervisor,
            self.inventory,
            self.ha,
            self.started_at,
        )
        self.executor = CommandExecutor(
            self.host,
            self.hypervisor,
            self.inventory,
            self.publisher.command_outcome,
            on_change=self._request_refresh,
            settings=ExecutorSettings(
                settings.command_workers, max_snapshots=settings.snapshots_max_per_vm
            ),
            on_snapshots=self.publisher.refresh_snapshots,
        )
        self.ticker = Ticker(
            settings,
            self.hypervisor,
            self.inventory,
            self.sampler,
            self.publisher,
            self._request_refresh,
        )
        self.intake = Intake(self.host, self.topics, self.bus, self.executor, self.publisher)
        self.router = InboundRouter(
            self.host,
            self.topics,
            self.intake.on_command,
            self.intake.on_set,
            self.publisher,
            self.ha,
            lambda: self._request(Republish()),
        )
        self.guest = GuestWatcher.wired(settings, self.hypervisor, self.inventory, self.publisher)
        self._threads: list[threading.Thread] = []

    def _bus(self, settings: AgentSettings, subs: list[tuple[str, bool]]) -> Bus:
        """The paho adapter: the will, the `online` status after every connect, and every
        message handed to the router (late-bound: the router needs what needs the bus)."""
        return Bus(
            settings,
            client_id=f"kvmsup-agent-{self.host}",
            will=outbound(
                "host_status",
                self.topics.host_status(self.host),
                HostStatus(host=self.host, online=False),
            ),
            online=lambda: self.publisher.status_message(online=True),
            subscriptions=subs,
            on_message=lambda msg: self.router.enqueue(msg),
            on_connected=lambda: self.router.enqueue(CONNECTED),
        )

    def _home_assistant(self, settings: AgentSettings) -> HomeAssistantPublisher:
        # Discovery may hold this many of paho's `offline_queue` places: the rest stays free
        # for command replies, states and events while thousands of configs go out.
        discovery_window = max(5, min(100, settings.offline_queue // 4))
        return HomeAssistantPublisher(
            self.host,
            self.topics,
            settings.ha_prefix,
            settings.metrics_interval,
            settings.vm_metrics_every,
            # Late-bound: the publisher needs the bus, which needs HA's status topic.
            lambda topic, payload, retain: self.bus.publish_paced(
                Outbound(topic, payload, DISCOVERY_QOS, retain), discovery_window
            ),
            connected=lambda: self.bus.connected,
            generation=lambda: self.bus.generation,
            probe=lambda topic, payload: self.bus.publish_confirmed(
                Outbound(topic, payload, DISCOVERY_QOS, False)
            ),
        )

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
        if self.ha is not None:
            self.ha.start()
        self.bus.start()
        for name, body in (
            ("hypervisor-events", self._hypervisor_events),
            ("mqtt-dispatch", partial(self.router.run, self._stop)),
            ("ticker", self._ticker),
        ):
            thread = threading.Thread(target=body, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.guest.start()

    def request_stop(self) -> None:
        """Ends `wait()` (safe from a signal handler); the caller then calls `stop()`."""
        self._stop.set()

    def stop(self) -> None:
        logger.info("agent %s stopping", self.host)
        self._stop.set()
        if self.ha is not None:
            self.ha.stop()
        # Every accepted command's final reply goes out while MQTT is still connected, and no
        # action begins once the agent has said it is going.
        self.executor.drain()
        self.bus.stop(farewell=self.publisher.status_message(online=False))
        self._event_calls.shutdown()
        self.guest.stop()
        self.ticker.shutdown()
        self.hypervisor.stop()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stop.wait(timeout)

    @property
    def tick(self) -> int:
        return self.ticker.tick

    def run_tick(self) -> MetricsBatch | None:
        return self.ticker.run_tick()

    # -- libvirt side (one worker: the only place that turns events into published state) ---
    def _hypervisor_events(self) -> None:
        while not self._stop.is_set():
            try:
                ev = self._hv_events.get(timeout=0.5)
            except queue.Empty:
                continue
            keep_going(f"libvirt event {ev.kind}", partial(self._on_hypervisor_event, ev))

    def _request(self, ev: EventWork) -> None:
        try:
            self._hv_events.put_nowait(ev)
        except queue.Full:
            uuid = ev.uuid if isinstance(ev, HypervisorEvent) else None
            logger.error("event queue full: dropped a %s request for %s", ev.kind, uuid)

    def _request_refresh(self, uuid: str, name: str | None = None) -> None:
        """Re-read one VM on the event worker and publish it if it changed."""
        self._request(HypervisorEvent("lifecycle", uuid, name))

    def _on_hypervisor_event(self, ev: EventWork) -> None:
        if isinstance(ev, Republish):
            if self.inventory.synced:
                for state in self.inventory.all():
                    self.publisher.publish_state(state)
                self.publisher.republish_snapshots()
            self.publisher.send_discovery()
        elif ev.kind == "connected":
            self._resync()
        elif ev.kind == "disconnected":
            self.inventory.synced = False
            self.sampler.reset()
            self.publisher.publish_status()
            self.publisher.event(kind="agent", event="libvirt_disconnected")
        elif ev.kind == "reboot" and ev.uuid:
            vm = self.inventory.get(ev.uuid)
            self.publisher.event(
                kind="reboot",
                uuid=ev.uuid,
                name=ev.name,
                event="rebooted",
                state=vm.state if vm else None,
            )
        elif ev.kind == "lifecycle" and ev.uuid:
            self._on_lifecycle(ev)

    def _bounded(self, fn: Callable[[], T]) -> T:
        return self._event_calls.run(fn, EVENT_CALL_TIMEOUT_S)

    def _on_lifecycle(self, ev: HypervisorEvent) -> None:
        assert ev.uuid is not None
        name = domstate.event_name(ev.event) if ev.event >= 0 else "changed"
        renaming = ev.event == domstate.EVENT_UNDEFINED and ev.detail == domstate.UNDEFINED_RENAMED
        if ev.event == domstate.EVENT_UNDEFINED and not renaming:
            self._undefined(ev.uuid, ev.name)
            return
        uuid = ev.uuid
        try:
            info = self._bounded(lambda: self.hypervisor.domain_info(uuid))
        except DomainNotFound:
            if not renaming:  # the DEFINED(renamed) event that follows brings the new name
                self._undefined(ev.uuid, ev.name)  # a transient domain that stopped is gone
            return
        except AgentError as exc:
            logger.warning("VM %s not re-read (%s): the next tick tries again", uuid, exc)
            return
        state = self.inventory.update(info, force=ev.event >= 0)
        if state is None:
            return
        self.publisher.publish_state(state)
        self.publisher.event(
            kind="lifecycle",
            uuid=state.uuid,
            name=state.name,
            event=name,
            detail=str(ev.detail) if ev.event >= 0 else "refreshed",
            state=state.state,
        )
        if ev.started and self.settings.memory_stats_period > 0:
            self._stats_period(uuid)

    def _stats_period(self, uuid: str) -> None:
        period = self.settings.memory_stats_period
        try:
            self._bounded(lambda: self.hypervisor.set_memory_stats_period(uuid, period))
        except AgentError as exc:
            logger.warning("memory stats period of %s not set: %s", uuid, exc)

    def _undefined(self, uuid: str, name: str | None) -> None:
        old = self.inventory.remove(uuid)
        self.publisher.clear_state(uuid)
        if old is not None or name:
            self.publisher.event(
                kind="lifecycle", uuid=uuid, name=old.name if old else name, event="undefined"
            )

    def _resync(self) -> None:
        """After every (re)connection: node facts, every VM republished, vanished ones cleared."""
        try:
            self.publisher.node = self._bounded(self.hypervisor.node_facts)
            count = self._bounded(self.hypervisor.domain_count)
            infos = self._event_calls.run(
                self.hypervisor.list_domains, RESYNC_BASE_S + RESYNC_PER_VM_S * count
            )
        except AgentError as exc:
            if self._stop.is_set():
                return  # stopping: the pools are closed, nothing to retry
            # Unsynced, commands are refused. Dropping the connection here would only make a
            # slow listing start over (and time out again); a lost one is reconnected anyway.
            delay = self._resync_retry
            self._resync_retry = min(RESYNC_RETRY_MAX_S, delay * 2)
            logger.warning("resync after connect failed (%s): retrying in %.0fs", exc, delay)
            timer = threading.Timer(delay, self._retry_resync)
            timer.daemon = True
            timer.start()
            return
        self._resync_retry = RESYNC_RETRY_S
        states, gone = self.inventory.replace_all(infos)
        self.sampler.reset()
        for state in states:
            self.publisher.publish_state(state)
        for old in gone:
            self.publisher.clear_state(old.uuid)
            self.publisher.event(
                kind="lifecycle",
                uuid=old.uuid,
                name=old.name,
                event="undefined",
                detail="vanished while disconnected",
            )
        self.publisher.publish_status()
        self.publisher.event(kind="agent", event="libvirt_connected", detail=f"{len(states)} VMs")
        self.publisher.clear_orphans()
        self.publisher.republish_snapshots()
        self.publisher.send_discovery()
        if self.settings.memory_stats_period > 0:
            for state in states:
                if state.is_active:
                    self._stats_period(state.uuid)
        logger.info("resynced %d VMs (%d vanished)", len(states), len(gone))

    def _retry_resync(self) -> None:
        # Still connected: a reconnect brings its own resync.
        if self.hypervisor.connected and not self._stop.is_set():
            self._request(HypervisorEvent("connected"))

    # -- the tick ---------------------------------------------------------------------------
    def _ticker(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            keep_going("metrics tick", self.run_tick)
            due, delay = next_deadline(due, self.settings.metrics_interval, time.monotonic())
            self._stop.wait(delay)
