"""Turns the agent's models into publications: host status, VM states, events, discovery.

Owns the retain policy of each (through `shared.topics.POLICY`), the Home Assistant hook on every
VM state change, the node facts the status announces, and the clearing of orphaned retained
states (SPEC §3; an empty retained payload is how MQTT deletes a retained message).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel

from agent import __version__
from agent.bus import Bus, Outbound
from agent.config import AgentSettings
from agent.homeassistant.discovery import DISCOVERY_QOS, DISCOVERY_RETAIN
from agent.homeassistant.sync import HomeAssistantPublisher
from agent.hypervisor import Hypervisor, NodeFacts
from agent.inventory import Inventory
from shared.messages import (
    CommandReply,
    CommandRequest,
    HostStatus,
    NodeInfo,
    VmEvent,
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
        if self.ha is not None:
            self.ha.vm_removed(uuid)
        for hook in self.cleared:
            hook(uuid)

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
