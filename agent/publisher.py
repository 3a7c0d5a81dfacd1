"""Turns the agent's models into publications: host status, VM states, snapshots, events, discovery.

Owns the retain policy of each (through `shared.topics.POLICY`), the Home Assistant hook on every
VM state change, the node facts the status announces, and the clearing of orphaned retained
states (SPEC §3; an empty retained payload is how MQTT deletes a retained message).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

from pydantic import BaseModel

from agent import __version__
from agent.bus import Bus, Outbound
from agent.config import AgentSettings
from agent.errors import AgentError
from agent.homeassistant.discovery import DISCOVERY_QOS, DISCOVERY_RETAIN
from agent.homeassistant.sync import HomeAssistantPublisher
from agent.hypervisor import Hypervisor, NodeFacts, SnapshotRecord
from agent.hypervisor.callpool import DaemonPool
from agent.inventory import Inventory
from shared.messages import (
    MAX_SNAPSHOTS,
    CommandReply,
    CommandRequest,
    HostStatus,
    NodeInfo,
    SnapshotInfo,
    VmEvent,
    VmSnapshots,
    VmState,
    dump,
)
from shared.messages import (
    Hypervisor as HypervisorInfo,
)
from shared.topics import POLICY, TopicKind, Topics

logger = logging.getLogger(__name__)


def outbound(kind: TopicKind, topic: str, model: BaseModel | None) -> Outbound:
    """A model (or `None`: an empty payload, which deletes a retained one) under its policy."""
    policy = POLICY[kind]
    return Outbound(topic, dump(model) if model is not None else b"", policy.qos, policy.retain)


class Publisher:
    def __init__(
        self,
        settings: AgentSettings,
        topics: Topics,
        bus: Bus,
        hypervisor: Hypervisor,
        inventory: Inventory,
        ha: HomeAssistantPublisher | None,
        started_at: datetime,
    ) -> None:
        self.settings = settings
        self.host = settings.host_id
        self.topics = topics
        self.bus = bus
        self.hypervisor = hypervisor
        self.inventory = inventory
        self.ha = ha
        self.started_at = started_at
        # Set by every resync; read by the status and by the tick's node reading.
        self.node: NodeFacts | None = None
        self._broker_retained: set[str] = set()
        self._retained_lock = threading.Lock()
        # Snapshot lists are read on a thread of their own (one RPC per snapshot): never on the
        # event worker, whose reads must stay short; one thread keeps each VM's in order.
        self._snapshot_reads = DaemonPool(1, "snapshots")
        self._snapshots_sent: dict[str, list[SnapshotInfo]] = {}
        # Told of every VM whose retained state is cleared: what else it owns of the VM goes too.
        self.cleared: list[Callable[[str], None]] = []

    def publish(self, kind: TopicKind, topic: str, model: BaseModel | None) -> None:
        self.bus.publish(outbound(kind, topic, model))

    def status_message(self, online: bool) -> Outbound:
        node = self.node
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
        return outbound("host_status", self.topics.host_status(self.host), status)

    def publish_status(self) -> None:
        self.bus.publish(self.status_message(online=True))

    def publish_state(self, state: VmState) -> None:
        self.publish("vm_state", self.topics.vm_state(self.host, state.uuid), state)
        if self.ha is not None:
            self.ha.vm_changed(state)

    def clear_state(self, uuid: str) -> None:
        self.publish("vm_state", self.topics.vm_state(self.host, uuid), None)
        self.publish("vm_snapshots", self.topics.vm_snapshots(self.host, uuid), None)
        if self.ha is not None:
            self.ha.vm_removed(uuid)
        for hook in self.cleared:
            hook(uuid)

    def refresh_snapshots(self, uuid: str) -> None:
        """Re-reads the VM's snapshots and publishes them if they changed (after a command)."""
        self._snapshot_reads.submit(partial(self._publish_snapshots, uuid, False))

    def republish_snapshots(self) -> None:
        """Every VM's snapshot list, changed or not (after a resync or an MQTT connect: the
        broker may have lost them, or libvirt's changed while the agent was away)."""
        for uuid in self.inventory.uuids():
            self._snapshot_reads.submit(partial(self._publish_snapshots, uuid, True))

    def _publish_snapshots(self, uuid: str, force: bool) -> None:
        vm = self.inventory.get(uuid)
        if vm is None:  # undefined: its retained list was cleared with its state
            self._snapshots_sent.pop(uuid, None)
            return
        try:
            records = self.hypervisor.snapshots(uuid)
        except AgentError as exc:
            logger.warning("snapshots of VM %s not read: %s", uuid, exc)
            return
        infos = [snapshot_info(r) for r in records if len(r.name) <= 256][-MAX_SNAPSHOTS:]
        if not force and self._snapshots_sent.get(uuid) == infos:
            return
        self._snapshots_sent[uuid] = infos
        message = VmSnapshots(host=self.host, uuid=uuid, name=vm.name, snapshots=infos)
        self.publish("vm_snapshots", self.topics.vm_snapshots(self.host, uuid), message)

    def publish_discovery(self, topic: str, payload: bytes) -> None:
        self.bus.publish(Outbound(topic, payload, DISCOVERY_QOS, DISCOVERY_RETAIN))

    def send_discovery(self) -> None:
        if self.ha is not None and self.inventory.synced:
            status = HostStatus.model_validate_json(self.status_message(online=True).payload)
            self.ha.publish_all(status, self.inventory.all())

    def event(self, **fields: object) -> None:
        self.publish(
            "host_events", self.topics.host_events(self.host), VmEvent(host=self.host, **fields)
        )

    def command_outcome(self, request: CommandRequest | None, reply: CommandReply) -> None:
        """Every final command outcome on `events`: the audit trail."""
        self.event(
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

    def saw_retained_state(self, uuid: str) -> None:
        """A retained state of ours came back from the broker: clear it if the VM is gone."""
        with self._retained_lock:
            self._broker_retained.add(uuid)
        self.clear_orphans()

    def clear_orphans(self) -> None:
        """Retained states on the broker for VMs libvirt no longer has (SPEC §3), cleared with empty
        retained payloads."""
        if not self.inventory.synced:
            return
        known = self.inventory.uuids()
        with self._retained_lock:
            orphans = self._broker_retained - known
            self._broker_retained -= orphans
        for uuid in orphans:
            logger.info("clearing the retained state of vanished VM %s", uuid)
            self.clear_state(uuid)


def snapshot_info(record: SnapshotRecord) -> SnapshotInfo:
    return SnapshotInfo.model_validate(
        {
            "name": record.name,
            "description": record.description,
            "created": datetime.fromtimestamp(record.created, UTC),
            "state": record.state,
            "has_memory": record.has_memory,
            "current": record.current,
            "parent": record.parent,
        }
    )
