"""The publisher: each message on its contract topic with its QoS and retain flag (SPEC §3),
the Home Assistant hook on every state change, and the clearing of orphaned retained states.

Pure: the bus and Home Assistant are recorders, libvirt a stand-in with a `connected` flag;
the inventory is the real one.
"""

from __future__ import annotations

import json

import pytest

from agent.config import AgentSettings
from agent.hypervisor import DomainInfo, NodeFacts
from agent.inventory import Inventory
from agent.publisher import Publisher
from shared.messages import CommandReply, CommandRequest, ErrorInfo, HostStatus, VmState, utc_now
from shared.topics import Topics
from tests.support.agent_bus import RecordingBus

pytestmark = pytest.mark.unit

HOST = "kvm1"
UA = "a0000000-0000-4000-8000-000000000001"
UB = "b0000000-0000-4000-8000-000000000002"
STATE_A = f"kvmsup/v1/{HOST}/vm/{UA}/state"
STATE_B = f"kvmsup/v1/{HOST}/vm/{UB}/state"
SNAPSHOTS_A = f"kvmsup/v1/{HOST}/vm/{UA}/snapshots"
SNAPSHOTS_B = f"kvmsup/v1/{HOST}/vm/{UB}/snapshots"
STATUS = f"kvmsup/v1/{HOST}/status"
EVENTS = f"kvmsup/v1/{HOST}/events"
RUNNING = 1


class Libvirt:
    connected = True


class RecordingHomeAssistant:
    def __init__(self) -> None:
        self.changed: list[str] = []
        self.removed: list[str] = []
        self.full: list[tuple[HostStatus, list[VmState]]] = []

    def vm_changed(self, state: VmState) -> None:
        self.changed.append(state.uuid)

    def vm_removed(self, uuid: str) -> None:
        self.removed.append(uuid)

    def publish_all(self, status: HostStatus, states: list[VmState]) -> None:
        self.full.append((status, states))


def info(uuid: str = UA, name: str = "web") -> DomainInfo:
    return DomainInfo(uuid, name, RUNNING, 1, 2, 2048 * 1024, 2048 * 1024, False, True)


class World:
    def __init__(self, *, ha: bool = False, libvirt_uri: str = "qemu:///system") -> None:
        self.settings = AgentSettings(
            host_id=HOST, topic_prefix="kvmsup", libvirt_uri=libvirt_uri, metrics_interval=2.0
        )
        self.bus = RecordingBus()
        self.libvirt = Libvirt()
        self.inventory = Inventory(HOST)
        self.ha = RecordingHomeAssistant() if ha else None
        self.publisher = Publisher(
            self.settings,
            Topics("kvmsup"),
            self.bus,  # type: ignore[arg-type]
            self.libvirt,  # type: ignore[arg-type]
            self.inventory,
            self.ha,  # type: ignore[arg-type]
            utc_now(),
        )

    def sync(self, *infos: DomainInfo) -> list[VmState]:
        states, _ = self.inventory.replace_all(infos)
        return states


def test_a_vm_state_is_published_retained_at_qos_1_on_its_state_topic() -> None:
    world = World()
    [state] = world.sync(info(UA))
    world.publisher.publish_state(state)
    [msg] = world.bus.sent
    assert (msg.topic, msg.qos, msg.retain) == (STATE_A, 1, True)
    body = json.loads(msg.payload)
    assert (body["v"], body["host"], body["uuid"], body["state"]) == (1, HOST, UA, "running")
    assert body["seq"] == state.seq


def test_clearing_a_state_publishes_an_empty_retained_payload_which_deletes_it() -> None:
    world = World()
    world.publisher.clear_state(UA)
    [msg, snapshots] = world.bus.sent
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == (STATE_A, b"", 1, True)
    # The VM's retained snapshot list goes with it.
    assert (snapshots.topic, snapshots.payload, snapshots.retain) == (SNAPSHOTS_A, b"", True)


def test_home_assistant_hears_every_state_change_and_removal() -> None:
    world = World(ha=True)
    [state] = world.sync(info(UA))
    world.publisher.publish_state(state)
    world.publisher.clear_state(UB)
    assert world.ha is not None
    assert (world.ha.changed, world.ha.removed) == ([UA], [UB])


def test_events_go_to_the_hosts_events_topic_at_qos_1_never_retained() -> None:
    world = World()
    world.publisher.event(kind="lifecycle", uuid=UA, name="web", event="started")
    [msg] = world.bus.sent
    assert (msg.topic, msg.qos, msg.retain) == (EVENTS, 1, False)
    body = json.loads(msg.payload)
    assert (body["host"], body["kind"], body["event"], body["uuid"]) == (
        HOST,
        "lifecycle",
        "started",
        UA,
    )


def test_a_command_outcome_is_an_event_with_who_asked_and_why_it_ended() -> None:
    world = World()
    request = CommandRequest(id="job-1", action="start", vm=UA, by="alice", not_after=utc_now())
    reply = CommandReply(
        id="job-1",
        host=HOST,
        status="failed",
        action="start",
        vm=UA,
        error=ErrorInfo(code="libvirt_error", message="no"),
    )
    world.publisher.command_outcome(request, reply)
    [msg] = world.bus.on(EVENTS)
    body = json.loads(msg.payload)
    assert (body["kind"], body["id"], body["status"], body["by"]) == (
        "command",
        "job-1",
        "failed",
        "alice",
    )
    assert body["error"]["code"] == "libvirt_error"


def test_the_status_is_retained_and_announces_libvirt_only_once_resynced() -> None:
    world = World()
    msg = world.publisher.status_message(online=True)
    assert (msg.topic, msg.qos, msg.retain) == (STATUS, 1, True)
    body = json.loads(msg.payload)
    # Connected to libvirt but not resynced yet: not announced as up, and no node facts.
    assert body["online"] is True and body["libvirt_connected"] is False
    assert body["node"] is None and body["interval_s"] == 2.0

    world.publisher.node = NodeFacts("QEMU", "8.2.0", 8, 16384, "x86_64")
    world.sync(info(UA))
    body = json.loads(world.publisher.status_message(online=True).payload)
    assert body["libvirt_connected"] is True
    assert body["node"] == {"cpus": 8, "memory_mb": 16384, "model": "x86_64"}
    assert body["hypervisor"] == {"type": "QEMU", "version": "8.2.0"}


def test_the_status_never_shows_the_libvirt_password() -> None:
    world = World(libvirt_uri="qemu+tcp://admin:s3cret@10.0.0.5/system")
    payload = world.publisher.status_message(online=True).payload
    assert b"s3cret" not in payload
    assert "10.0.0.5" in json.loads(payload)["libvirt_uri"]


def test_a_retained_state_of_a_vanished_vm_is_cleared_and_a_known_one_kept() -> None:
    world = World()
    world.sync(info(UA))
    world.publisher.saw_retained_state(UA)
    world.publisher.saw_retained_state(UB)  # libvirt no longer has it
    assert [(m.topic, m.payload, m.retain) for m in world.bus.sent] == [
        (STATE_B, b"", True),
        (SNAPSHOTS_B, b"", True),
    ]


def test_orphans_wait_for_the_first_full_listing_then_are_cleared_once() -> None:
    world = World()
    world.publisher.saw_retained_state(UB)  # before the resync: the VM may well exist
    assert world.bus.sent == []
    world.sync(info(UA))
    world.publisher.clear_orphans()
    world.publisher.clear_orphans()
    assert [(m.topic, m.payload) for m in world.bus.sent] == [(STATE_B, b""), (SNAPSHOTS_B, b"")]


def test_discovery_is_sent_only_once_the_vms_are_known() -> None:
    world = World(ha=True)
    assert world.ha is not None
    world.publisher.send_discovery()
    assert world.ha.full == []
    world.sync(info(UA), info(UB, "db"))
    world.publisher.send_discovery()
    [(status, states)] = world.ha.full
    assert status.host == HOST and status.online
    assert sorted(s.uuid for s in states) == [UA, UB]


def test_discovery_configs_are_retained_at_qos_1() -> None:
    world = World(ha=True)
    topic = f"homeassistant/switch/kvmsup_{HOST}/config"
    world.publisher.publish_discovery(topic, b"{}")
    assert [(m.topic, m.qos, m.retain) for m in world.bus.sent] == [(topic, 1, True)]
