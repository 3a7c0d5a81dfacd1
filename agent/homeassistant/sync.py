"""Keeps Home Assistant's discovery configs on the broker in step with the agent's VMs (SPEC §6).

Full republishes (on every MQTT connect and resync, and when Home Assistant announces `online`)
run on a thread of their own, coalesced: a burst of requests becomes one round, at most one
round runs at a time, and rounds are spaced, so a flood of `homeassistant/status` messages costs
one republish every few seconds, not one per message. The first round of each start moves the
configs from the earlier topic layout (see `discovery.MIGRATE_PAYLOAD` for the order and why),
and is retried with backoff until it succeeds. A single VM's changes and removals go through
the same thread, queued: the libvirt event thread that reports them never waits for the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Literal

from agent import __version__
from agent.homeassistant import discovery
from agent.homeassistant.entities import Signature
from shared.messages import HostStatus, VmState
from shared.topics import Topics

logger = logging.getLogger(__name__)

# (topic, payload, retain) -> False when the message was not sent nor queued.
Publish = Callable[[str, bytes, bool], bool]
# (topic, payload), not retained -> the broker's verdict: True accepted, False refused, None no
# answer. Tells whether the ACL still lets this agent write the earlier layout.
Probe = Callable[[str, bytes], "bool | None"]

COALESCE_S = 0.5  # requests within this window make one round
MIN_GAP_S = 3.0  # between the end of a round and the start of the next
# Between the migration's steps: Home Assistant unloads entities in tasks of its own, and a
# config on the new topic that arrives before its entity is unloaded is refused. Longer with
# more messages to work through; a config refused anyway is sent again after the last step.
MIGRATION_PAUSE_S = 2.0
MIGRATION_PAUSE_PER_MESSAGE_S = 0.001
MIGRATION_PAUSE_MAX_S = 30.0
JUNK_LOG_EVERY = 1000
# After a failed migration (no answer from the broker, a dropped connection): try again after
# this long, doubling up to the maximum, besides on every connect and `online`.
RETRY_S = 5.0
RETRY_MAX_S = 300.0
# What a VM's queued entry asks for: its configs, its removal, or its removal then its configs.
_Pending = Literal["changed", "removed", "replaced"]


class HomeAssistantPublisher:
    """Re-sends configs when HA comes online or a VM's shown facts change; removes undefined VMs."""

    def __init__(
        self,
        host: str,
        topics: Topics,
        ha_prefix: str,
        interval_s: float,
        vm_metrics_every: int,
        publish: Publish,
        connected: Callable[[], bool] = lambda: True,
        probe: Probe | None = None,
        generation: Callable[[], int] = lambda: 0,
        *,
        coalesce_s: float = COALESCE_S,
        min_gap_s: float = MIN_GAP_S,
        migration_pause_s: float = MIGRATION_PAUSE_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self.host = host
        self.topics = topics
        self.ha_prefix = ha_prefix
        self.status_topic = discovery.ha_status_topic(ha_prefix)
        self._publish = publish
        self._connected = connected
        self._generation = generation
        self._probe: Probe = probe or (lambda topic, payload: publish(topic, payload, False))
        self._coalesce_s = coalesce_s
        self._min_gap_s = min_gap_s
        self._migration_pause_s = migration_pause_s
        self._vm_expiry = discovery.expire_after_for(interval_s, vm_metrics_every)
        self._host_expiry = discovery.expire_after_for(interval_s)
        # Guarded by _lock: what the configs show, and what was last sent of each VM.
        self._lock = threading.Lock()
        self._status: HostStatus | None = None
        self._vms: dict[str, VmState] = {}
        self._signatures: dict[str, Signature] = {}
        self._ready = False  # the first full inventory arrived
        # The VMs of that first inventory: only they may have configs in the earlier layout
        # (the agent that wrote them ran before this one). Any other VM is sent without waiting
        # for the migration.
        self._legacy: set[str] | None = None
        self._retry_s = retry_s
        self._backoff = retry_s
        self._retry_at: float | None = None
        # VM changes and removals for the discovery thread, one entry per VM (the latest wins;
        # a removal followed by a redefinition sends both). Every message is sent from that
        # thread, so a removal never lands between a republish's configs, and the libvirt event
        # thread never waits for a slow broker.
        self._pending: dict[str, _Pending] = {}
        self._wake = threading.Event()
        self._wanted = threading.Event()
        self._wanted_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.migrated = False
        # The broker's answer to the migration's probe: may this agent still write the earlier
        # layout (None: not asked yet, or no answer).
        self.legacy_writable: bool | None = None
        self.rounds = 0
        self.junk_status = 0
        self.on_request: list[Callable[[], None]] = []  # told of every republish asked for

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ha-discovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- requests (any thread; never block) -------------------------------------------------
    def on_status(self, payload: bytes, retain: bool) -> None:
        """A message on `homeassistant/status`. A live `online` asks for a republish; a retained
        one is ignored (every connect republishes anyway); anything else is counted."""
        said = discovery.ha_status(payload)
        if said == "junk":
            self.junk_status += 1
            if self.junk_status % JUNK_LOG_EVERY == 1:
                logger.warning(
                    "ignored %d unexpected payload(s) on %s, latest %d bytes: %r",
                    self.junk_status,
                    self.status_topic,
                    len(payload),
                    payload[:64],
                )
        elif said == "online" and not retain:
            self.request()

    def request(self) -> None:
        for hook in self.on_request:
            hook()
        with self._lock:
            if not self._wanted.is_set():
                self._wanted_at = time.monotonic()
                self._wanted.set()
        self._wake.set()

    def publish_all(self, status: HostStatus | None, vms: list[VmState]) -> None:
        """The whole inventory (on each MQTT connect and resync): a full republish is queued."""
        with self._lock:
            self._status = status
            self._vms = {vm.uuid: vm for vm in vms}
            self._ready = True
            if self._legacy is None:
                self._legacy = set(self._vms)
        self.request()

    def vm_changed(self, vm: VmState) -> None:
        """A new VM, or a rename / vCPU / memory change: its configs again; else nothing. Before
        the first round (the migration) it is only recorded: that round sends every config.
        Queued for the discovery thread: returns at once."""
        with self._lock:
            self._vms[vm.uuid] = vm
            before = self._pending.get(vm.uuid)
            self._pending[vm.uuid] = "replaced" if before in ("removed", "replaced") else "changed"
        self._wake.set()

    def vm_removed(self, uuid: str) -> None:
        with self._lock:
            self._vms.pop(uuid, None)
            self._signatures.pop(uuid, None)
            self._pending[uuid] = "removed"
        self._wake.set()

    # -- the discovery thread ---------------------------------------------------------------
    def _run(self) -> None:
        next_at = 0.0
        while not self._stop.is_set():
            self._drain()
            timeout: float | None = None
            if self._retry_at is not None:
                if time.monotonic() >= self._retry_at:
                    self._retry_at = None
                    self.request()
                else:
                    timeout = self._retry_at - time.monotonic()
            if self._wanted.is_set():
                with self._lock:
                    due = max(self._wanted_at + self._coalesce_s, next_at)
                timeout = due - time.monotonic()
                if timeout <= 0:
                    self._wanted.clear()
                    try:
                        done = self._round()
                    except Exception:
                        logger.exception("Home Assistant discovery round failed")
                        done = False
                    if done or self.migrated:
                        self._backoff = self._retry_s
                    else:
                        logger.warning(
                            "Home Assistant discovery migration not done: again in %.0f s",
                            self._backoff,
                        )
                        self._retry_at = time.monotonic() + self._backoff
                        self._backoff = min(RETRY_MAX_S, self._backoff * 2)
                    next_at = time.monotonic() + self._min_gap_s
                    continue
            self._wake.wait(timeout)
            self._wake.clear()

    def _drain(self) -> None:
        """Sends what the queued VM changes and removals call for."""
        while not self._stop.is_set():
            with self._lock:
                if not self._pending:
                    return
                uuid, what = self._pending.popitem()
                vm = self._vms.get(uuid)
                changed = vm is not None and self._signatures.get(uuid) != discovery.vm_signature(
                    vm
                )
                # A VM the earlier layout never held needs no migration to wait for.
                sendable = self.migrated or (self._legacy is not None and uuid not in self._legacy)
            try:
                if what in ("removed", "replaced"):
                    # The earlier layout only while the migration may still be to do there.
                    legacy = not self.migrated and self.legacy_writable is not False
                    removals = discovery.vm_removals(self.host, uuid, self.ha_prefix, legacy=legacy)
                    self._send(removals, retain=True)
                if what in ("changed", "replaced") and changed and sendable:
                    self._send_vm(uuid)
            except Exception:
                logger.exception("Home Assistant discovery of VM %s failed", uuid)

    def _round(self) -> bool:
        """False when the migration is still to be done (the caller schedules a retry)."""
        with self._lock:
            ready = self._ready
            known = list(self._vms)
            legacy = set(self._legacy or ())
        if not ready or not self._connected():
            return True  # the next connect / resync asks again
        self.rounds += 1
        if self.migrated:
            if self._send_all(known):
                logger.info("HA discovery sent for %s and %d VMs", self.host, len(known))
            return True
        if not self._migrate(known, [uuid for uuid in known if uuid in legacy]):
            return False
        self.migrated = True
        with self._lock:
            grown = set(self._vms) - set(known)
        if grown:  # changed during the migration: perhaps recorded, not sent
            self.request()
        return True

    def _migrate(self, known: list[str], legacy: list[str]) -> bool:
        """Moves every config of this host's VMs from the earlier layout, keeping HA's registry
        entries. Done once per start, for every VM known now: the agent cannot read which
        old-layout configs exist (the ACL gives agents no read on discovery), and the steps cost
        nothing in HA for a topic that never held one. A VM undefined while the agent was down
        has its old configs cleared with its orphaned state (`vm_removals`). `legacy`: the VMs
        of `known` that may have old-layout configs."""
        host, prefix = self.host, self.ha_prefix
        markers = [m for uuid in legacy for m in discovery.migration_markers(host, uuid, prefix)]
        if not markers:
            return self._send_all(known)
        # Every step runs on one connection. Messages published while the connection is down
        # wait in paho's queue and go out back-to-back at the reconnect, without the pause HA
        # needs between the markers and the new configs: a change of connection aborts the
        # attempt, and the retry runs the whole handshake again.
        generation = self._generation()
        # The host's configs never moved: they need not wait for the broker's answer.
        if not self._send_host():
            return False
        # The first marker asks the broker whether this agent may still write the old layout.
        verdict = self._probe(*markers[0])
        if verdict is None:
            return False  # no answer: the next round tries again
        self.legacy_writable = verdict
        if not verdict:
            logger.info(
                "the broker refuses the earlier discovery layout to %s (per-host ACL): nothing "
                "moved. Configs an agent left there are cleared as broker/README.md describes",
                host,
            )
            return self._send_all(known)
        return self._move(known, legacy, markers, generation)

    def _same_connection(self, generation: int) -> bool:
        """Whether the migration still runs on the connection it started on."""
        if self._stop.is_set():
            return False  # stopping: the next start runs the whole handshake again
        if self._connected() and self._generation() == generation:
            return True
        logger.warning("MQTT connection lost during the discovery migration of %s", self.host)
        return False

    def _move(
        self,
        known: list[str],
        legacy: list[str],
        markers: list[tuple[str, bytes]],
        generation: int,
    ) -> bool:
        """The migration's steps once the broker let the first marker through: the other
        markers, a pause, the new configs, the old ones cleared, a pause, the new ones again."""
        host, prefix = self.host, self.ha_prefix
        pause = min(
            MIGRATION_PAUSE_MAX_S,
            self._migration_pause_s + MIGRATION_PAUSE_PER_MESSAGE_S * len(markers),
        )

        def same_connection() -> bool:
            return self._same_connection(generation)

        # Each marker confirmed (PUBACK): none may wait in the offline queue, and the pause
        # counts from when the broker had them all.
        for topic, payload in markers[1:]:
            if self._probe(topic, payload) is not True or not same_connection():
                return False
        if self._stop.wait(pause) or not same_connection():
            return False
        if not self._send_all(known) or not same_connection():
            return False
        old = [r for uuid in legacy for r in discovery.legacy_removals(host, uuid, prefix)]
        if not self._send(old, retain=True):
            return False
        # A config that reached HA before its old entity was unloaded was refused, and HA has
        # forgotten it: the same configs again (an unchanged one is ignored by HA). After a
        # reconnect here the next round (asked for by the connect) sends them.
        if self._stop.wait(pause) or not self._send_all(known):
            return False
        logger.info(
            "Home Assistant discovery of host %s on the per-host layout (%d VMs moved)",
            self.host,
            len(legacy),
        )
        return True

    # -- sending ----------------------------------------------------------------------------
    def _send_all(self, uuids: Iterable[str]) -> bool:
        if not self._send_host():
            return False
        return all(self._send_vm(uuid) for uuid in uuids if not self._stop.is_set())

    def _send_host(self) -> bool:
        with self._lock:
            status = self._status
        host = discovery.host_configs(
            self.host,
            status,
            self.topics,
            self.ha_prefix,
            __version__,
            expire_after=self._host_expiry,
        )
        return self._send(host, retain=True)

    def _send_vm(self, uuid: str) -> bool:
        with self._lock:
            vm = self._vms.get(uuid)
            if vm is None:
                return True  # removed meanwhile: its removal is queued
            self._signatures[uuid] = discovery.vm_signature(vm)
        configs = discovery.vm_configs(
            self.host,
            vm,
            self.topics,
            self.ha_prefix,
            __version__,
            expire_after=self._vm_expiry,
        )
        return self._send(configs, retain=True)

    def _send(self, messages: Iterable[tuple[str, bytes]], *, retain: bool) -> bool:
        return all(self._publish(topic, payload, retain) for topic, payload in messages)
