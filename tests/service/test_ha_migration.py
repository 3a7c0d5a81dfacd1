"""The move to per-host discovery topics, against Home Assistant's bookkeeping (support/hass.py):
the order that keeps every registry entry and the orders that lose them, played message by
message (unit); the publisher's rounds, on its own threads (service)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from agent.homeassistant import discovery
from agent.homeassistant.sync import HomeAssistantPublisher
from shared.topics import Topics
from tests.support.gateway import wait_until
from tests.support.ha_layouts import (
    HA,
    UUID_A,
    UUID_B,
    VMS,
    assert_kept,
    legacy_configs,
    new_configs,
    upgraded_from_old_layout,
    vm_state,
)
from tests.support.hass import HassDiscovery

pytestmark = pytest.mark.service

UUID_GONE = "11111111-2222-4333-8444-555555555555"


# -- the publisher's rounds ----------------------------------------------------------------------
class Broker:
    """Retained messages and a Home Assistant fed in publish order; thread-safe."""

    def __init__(self, hass: HassDiscovery | None = None) -> None:
        self.hass = hass or HassDiscovery()
        self.retained: dict[str, bytes] = {}
        self.sent: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()

    def publish(self, topic: str, payload: bytes, retain: bool) -> bool:
        with self.lock:
            self.sent.append((topic, payload, retain))
            if retain:
                if payload:
                    self.retained[topic] = payload
                else:
                    self.retained.pop(topic, None)
            self.hass.receive(topic, payload)
        return True


def publisher(broker: Broker, **kw: Any) -> HomeAssistantPublisher:
    probe = kw.pop("probe", None)
    pub = HomeAssistantPublisher(
        "h1",
        Topics(),
        HA,
        2.0,
        5,
        broker.publish,
        probe=probe,
        **({"coalesce_s": 0.0, "min_gap_s": 0.0, "migration_pause_s": 0.0} | kw),
    )
    pub.start()
    return pub


def test_agent_start_moves_an_old_layout_without_losing_an_entity() -> None:
    hass, before = upgraded_from_old_layout(*VMS)
    broker = Broker(hass)
    for vm in VMS:
        broker.retained.update(legacy_configs(vm))
    pub = publisher(broker)
    try:
        for vm in VMS:  # the resync publishes every state first: recorded, not sent yet
            pub.vm_changed(vm)
        assert broker.sent == []
        pub.publish_all(None, VMS)
        wait_until(lambda: pub.migrated)
    finally:
        pub.stop()
    assert_kept(hass, before)
    # On the broker: the new layout only, host configs included.
    expected = set(discovery.host_config_topics("h1", HA))
    for vm in VMS:
        expected |= set(discovery.config_topics("h1", vm.uuid, HA))
    assert set(broker.retained) == expected
    # The markers went out unretained, each before the first new config (the host's configs,
    # which never moved, may go first).
    markers = [i for i, m in enumerate(broker.sent) if m[1] == discovery.MIGRATE_PAYLOAD]
    moved = expected - set(discovery.host_config_topics("h1", HA))
    first_new = min(i for i, m in enumerate(broker.sent) if m[0] in moved)
    assert len(markers) == 2 * len(discovery.LEGACY_VM_OBJECTS) and max(markers) < first_new
    assert not any(retain for _, payload, retain in broker.sent if payload == b"{}")


def test_migration_happens_once_per_start_and_later_births_only_republish() -> None:
    broker = Broker()
    pub = publisher(broker)
    try:
        pub.publish_all(None, VMS)
        wait_until(lambda: pub.migrated)
        broker.sent.clear()
        pub.on_status(b"online", retain=False)
        wait_until(lambda: len(broker.sent) >= 2 + 2 * len(discovery.VM_OBJECTS))
        time.sleep(0.2)
    finally:
        pub.stop()
    assert not [m for m in broker.sent if m[1] == discovery.MIGRATE_PAYLOAD or not m[1]]
    assert broker.hass.removed == [] and broker.hass.refused == []


def test_a_vm_undefined_while_the_agent_was_down_loses_its_old_configs_too() -> None:
    gone = vm_state(UUID_GONE, "gone")
    hass, _ = upgraded_from_old_layout(*VMS, gone)
    broker = Broker(hass)
    broker.retained.update(legacy_configs(gone))
    pub = publisher(broker)
    try:
        pub.vm_removed(UUID_GONE)  # its orphaned retained state was seen and cleared
        pub.publish_all(None, VMS)
        wait_until(lambda: pub.migrated)
    finally:
        pub.stop()
    assert not [t for t in broker.retained if UUID_GONE.replace("-", "") in t]
    assert not [u for u in hass.entities() if UUID_GONE.replace("-", "") in u]
    assert len(hass.removed) == len(discovery.LEGACY_VM_OBJECTS)  # the gone VM's, nothing else


def test_a_flood_of_births_makes_a_few_rounds_not_one_per_message() -> None:
    broker = Broker()
    pub = publisher(broker, coalesce_s=0.2, min_gap_s=0.5)
    try:
        pub.publish_all(None, VMS)
        wait_until(lambda: pub.migrated)
        start = pub.rounds
        began = time.monotonic()
        for _ in range(2000):
            pub.on_status(b"online", retain=False)
        wait_until(lambda: pub.rounds > start)
        flood_s = time.monotonic() - began
        time.sleep(1.0)
    finally:
        pub.stop()
    # One round per coalescing window and gap at most, plus the one asked for at the end.
    assert pub.rounds - start <= 3 + flood_s / 0.7, (pub.rounds - start, flood_s)


@pytest.mark.parametrize(
    "junk", [b"\xff\xfe\x00\x01", b"online" * 100_000, b'{"state":"online"}', b"", b"ONLINE"]
)
def test_junk_on_the_status_topic_is_counted_and_ignored(
    junk: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker()
    pub = publisher(broker)
    try:
        pub.publish_all(None, VMS)
        wait_until(lambda: pub.migrated)
        rounds = pub.rounds
        for _ in range(2500):
            pub.on_status(junk, retain=False)
        pub.on_status(junk, retain=True)
        time.sleep(0.3)
    finally:
        pub.stop()
    assert pub.rounds == rounds and pub.junk_status == 2501
    warnings = [r for r in caplog.records if "unexpected payload" in r.getMessage()]
    assert 1 <= len(warnings) <= 3  # logged once, then once per thousand
    assert all(len(r.getMessage()) < 300 for r in warnings)


def test_a_vm_removed_during_a_round_gets_no_config_after_its_removal() -> None:
    vms = [vm_state(f"{i:08x}-0000-4000-8000-000000000000", f"vm{i}") for i in range(50)]
    broker = Broker()
    pub = publisher(broker)
    try:
        pub.publish_all(None, vms)
        wait_until(lambda: pub.migrated)
        pub.request()
        for vm in vms[::3]:
            pub.vm_removed(vm.uuid)
        time.sleep(0.3)
        wait_until(lambda: not pub._wanted.is_set())
        time.sleep(0.3)
    finally:
        pub.stop()
    for vm in vms[::3]:
        assert not [t for t in broker.retained if vm.uuid.replace("-", "") in t], vm.uuid


def test_when_the_acl_refuses_the_old_layout_nothing_more_is_sent_there() -> None:
    broker = Broker()
    probed: list[str] = []

    def refused(topic: str, payload: bytes) -> bool:
        probed.append(topic)
        return False  # PUBACK 0x87: the per-host ACL is already in force

    pub = publisher(broker, probe=refused)
    try:
        pub.publish_all(None, VMS)
        wait_until(lambda: pub.migrated)
    finally:
        pub.stop()
    assert len(probed) == 1
    legacy = {t for vm in VMS for t in discovery.legacy_config_topics("h1", vm.uuid, HA)}
    assert not [m for m in broker.sent if m[0] in legacy]
    expected = {t for vm in VMS for t in discovery.config_topics("h1", vm.uuid, HA)}
    assert expected <= set(broker.retained)


class StalledBroker(Broker):
    """A broker that stops acknowledging: every publish blocks until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.blocked = threading.Event()

    def publish(self, topic: str, payload: bytes, retain: bool) -> bool:
        if not self.release.is_set():
            self.blocked.set()
            self.release.wait()
        return super().publish(topic, payload, retain)


def test_vm_events_never_wait_for_a_stalled_broker() -> None:
    broker = StalledBroker()
    pub = publisher(broker)
    try:
        broker.release.set()
        pub.publish_all(None, VMS)
        wait_until(lambda: pub.migrated)
        broker.release.clear()
        pub.request()  # a republish that the broker now stalls
        wait_until(broker.blocked.is_set)
        renamed = [vm_state(UUID_A, f"web{i}") for i in range(50)]

        def libvirt_events() -> None:  # what the libvirt event thread calls
            for vm in renamed:
                pub.vm_changed(vm)
            pub.vm_removed(UUID_B)
            pub.vm_changed(vm_state(UUID_GONE, "new"))

        worker = threading.Thread(target=libvirt_events)
        worker.start()
        worker.join(timeout=10)
        stalled = worker.is_alive()
        broker.release.set()
        worker.join()
        assert not stalled, "the libvirt event thread waited for the broker"
        new_topics = set(discovery.config_topics("h1", UUID_GONE, HA))
        wait_until(lambda: new_topics <= set(broker.retained))
        wait_until(lambda: not [t for t in broker.retained if UUID_B.replace("-", "") in t])
    finally:
        broker.release.set()
        pub.stop()
    # Coalesced per VM: the 50 renames became at most two sends of UUID_A's configs (the
    # stalled round's and the latest), and the last name is what the broker keeps.
    power = discovery.config_topics("h1", UUID_A, HA)[0]
    sends = [m for m in broker.sent if m[0] == power]
    assert len(sends) <= 3, len(sends)
    assert b"web49" in broker.retained[power]


def test_a_migration_without_an_answer_is_retried_without_a_new_request() -> None:
    hass, before = upgraded_from_old_layout(*VMS)
    broker = Broker(hass)
    answers: list[bool | None] = [None, None]  # the broker is slow twice, then answers

    def probe(topic: str, payload: bytes) -> bool | None:
        if answers:
            return answers.pop(0)
        return broker.publish(topic, payload, False)

    pub = publisher(broker, probe=probe, retry_s=0.05)
    try:
        pub.publish_all(None, VMS)
        wait_until(lambda: pub.migrated)  # no connect, no `online`: the retries alone
    finally:
        pub.stop()
    assert_kept(hass, before)
    assert pub.rounds == 3


def test_a_vm_defined_after_start_is_discovered_while_the_migration_waits() -> None:
    broker = Broker()
    pub = publisher(broker, probe=lambda topic, payload: None, retry_s=0.05)
    try:
        pub.publish_all(None, VMS)
        wait_until(lambda: pub.rounds >= 2)  # the migration failed, and failed again
        pub.vm_changed(vm_state(UUID_GONE, "new"))
        new_topics = set(discovery.config_topics("h1", UUID_GONE, HA))
        wait_until(lambda: new_topics <= set(broker.retained))
        assert not pub.migrated
        assert set(discovery.host_config_topics("h1", HA)) <= set(broker.retained)
    finally:
        pub.stop()
    # The VMs that may still have old-layout configs are not sent on the new layout yet: HA
    # would refuse those configs while the old entities are loaded.
    assert not set(discovery.config_topics("h1", UUID_A, HA)) & set(broker.retained)
    assert broker.hass.refused == [] and broker.hass.removed == []


class DroppingBroker(Broker):
    """The connection drops after `drop_after` markers and comes back `down_s` later: what is
    published meanwhile waits in the client's queue and reaches the broker back-to-back at the
    reconnect (as paho does); a confirmed publish gets no answer while down."""

    def __init__(self, drop_after: int, down_s: float) -> None:
        super().__init__()
        self.drop_after, self.down_s = drop_after, down_s
        self.markers = 0
        self.up = True
        self.generation = 1
        self.queued: list[tuple[str, bytes, bool]] = []
        self.delivered: list[tuple[float, str, bytes]] = []
        self.on_reconnect: Callable[[], None] = lambda: None

    def _deliver(self, topic: str, payload: bytes, retain: bool) -> None:
        self.delivered.append((time.monotonic(), topic, payload))
        super().publish(topic, payload, retain)

    def publish(self, topic: str, payload: bytes, retain: bool) -> bool:
        with self.lock:
            if payload == discovery.MIGRATE_PAYLOAD:
                self.markers += 1
                if self.markers == self.drop_after:
                    self.up = False
                    threading.Timer(self.down_s, self.reconnect).start()
            if not self.up:
                self.queued.append((topic, payload, retain))
                return True
        self._deliver(topic, payload, retain)
        return True

    def confirmed(self, topic: str, payload: bytes) -> bool | None:
        if not self.up:
            return None
        self.publish(topic, payload, False)
        return True if self.up else None

    def reconnect(self) -> None:
        with self.lock:
            self.generation += 1
            self.up = True
            queued, self.queued = self.queued, []
        for message in queued:
            self._deliver(*message)
        self.on_reconnect()


def test_a_broker_drop_mid_migration_restarts_it_with_the_pause_kept() -> None:
    pause = 0.3
    broker = DroppingBroker(drop_after=5, down_s=0.5)
    pub = HomeAssistantPublisher(
        "h1",
        Topics(),
        HA,
        2.0,
        5,
        broker.publish,
        connected=lambda: broker.up,
        probe=broker.confirmed,
        generation=lambda: broker.generation,
        coalesce_s=0.0,
        min_gap_s=0.0,
        migration_pause_s=pause,
        retry_s=0.05,
    )
    broker.on_reconnect = lambda: pub.publish_all(None, VMS)  # every connect, as the agent does
    pub.start()
    try:
        pub.publish_all(None, VMS)
        wait_until(lambda: pub.migrated and broker.generation == 2)
    finally:
        pub.stop()
    # Every new-layout VM config reached the broker at least the pause after the last marker
    # before it: HA had unloaded the old entity, so it took the config.
    moved = {t for vm in VMS for t in discovery.config_topics("h1", vm.uuid, HA)}
    last_marker: float | None = None
    for at, topic, payload in broker.delivered:
        if payload == discovery.MIGRATE_PAYLOAD:
            last_marker = at
        elif topic in moved:
            assert last_marker is not None and at - last_marker >= pause * 0.9, topic
    assert set(moved) <= set(broker.retained)


@pytest.mark.parametrize("acl_allows_old_layout", [True, False])
def test_an_undefine_after_the_migration_leaves_the_old_layout_alone(
    acl_allows_old_layout: bool,
) -> None:
    broker = Broker()

    def probe(topic: str, payload: bytes) -> bool:
        return broker.publish(topic, payload, False) and acl_allows_old_layout

    pub = publisher(broker, probe=probe)
    try:
        pub.publish_all(None, VMS)
        wait_until(lambda: pub.migrated)
        broker.sent.clear()
        pub.vm_removed(UUID_A)
        wait_until(lambda: len(broker.sent) >= len(discovery.VM_OBJECTS))
        time.sleep(0.2)
    finally:
        pub.stop()
    # Once the window closes, every write to the earlier layout is refused (and logged by the
    # broker): an undefine sends only its own layout's removals.
    assert sorted(t for t, _, _ in broker.sent) == sorted(discovery.config_topics("h1", UUID_A, HA))
    assert pub.legacy_writable is acl_allows_old_layout


# -- unit (no I/O): the handshake, message by message ----------------------------------------------


# -- the handshake, and why --------------------------------------------------------------------
@pytest.mark.unit
def test_marker_then_new_config_then_empty_old_topic_keeps_every_registry_entry() -> None:
    hass, before = upgraded_from_old_layout(*VMS)
    for vm in VMS:
        for topic, payload in discovery.migration_markers("h1", vm.uuid, HA):
            hass.receive(topic, payload)
        for topic, payload in new_configs(vm):
            hass.receive(topic, payload)
        for topic, payload in discovery.legacy_removals("h1", vm.uuid, HA):
            hass.receive(topic, payload)
    assert_kept(hass, before)
    # The disabled-by-default buttons moved too, and stay disabled.
    assert before[f"kvmsup_h1_{UUID_A.replace('-', '')}_force_off"][4] is True


@pytest.mark.unit
def test_emptying_the_old_topic_first_removes_the_registry_entries() -> None:
    hass, before = upgraded_from_old_layout(*VMS)
    for vm in VMS:
        for topic, payload in discovery.legacy_removals("h1", vm.uuid, HA):
            hass.receive(topic, payload)
        for topic, payload in new_configs(vm):
            hass.receive(topic, payload)
    # Home Assistant removed every entity (and the devices with them) before recreating them,
    # and the user's rename did not come back.
    assert len(hass.removed) == len(VMS) * len(discovery.LEGACY_VM_OBJECTS)
    power = f"kvmsup_h1_{UUID_A.replace('-', '')}_power"
    assert hass.entities()[power].name is None and before[power][2] == "Web power"
    with pytest.raises(AssertionError):
        assert_kept(hass, before)


@pytest.mark.unit
def test_new_topic_first_is_refused_then_emptying_the_old_one_loses_the_entities() -> None:
    hass, before = upgraded_from_old_layout(*VMS)
    for vm in VMS:
        for topic, payload in new_configs(vm):
            hass.receive(topic, payload)
    # Loaded from the old topics, the unique_ids refuse the new ones ("does not generate
    # unique IDs"), except the disabled buttons, which are not loaded.
    enabled = [s for s in discovery.LEGACY_VM_OBJECTS if "enabled_by_default" not in s.options]
    assert len(hass.refused) == len(VMS) * len(enabled)
    for vm in VMS:
        for topic, payload in discovery.legacy_removals("h1", vm.uuid, HA):
            hass.receive(topic, payload)
    assert hass.removed and len(hass.bound()) < len(before)
