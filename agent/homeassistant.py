"""Keeps Home Assistant's discovery configs on the broker in step with the agent's VMs (SPEC §6)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agent import __version__, discovery
from agent.ha_entities import Signature
from shared.messages import HostStatus, VmState
from shared.topics import Topics

logger = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]


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
    ) -> None:
        self.host = host
        self.topics = topics
        self.ha_prefix = ha_prefix
        self.status_topic = discovery.ha_status_topic(ha_prefix)
        self._publish = publish
        self._vm_expiry = discovery.expire_after_for(interval_s, vm_metrics_every)
        self._host_expiry = discovery.expire_after_for(interval_s)
        self._signatures: dict[str, Signature] = {}
        self._lock = threading.Lock()

    def publish_all(self, status: HostStatus | None, vms: list[VmState]) -> None:
        """Every config: on each MQTT connect and when Home Assistant says `online`."""
        for topic, payload in discovery.host_configs(
            self.host,
            status,
            self.topics,
            self.ha_prefix,
            __version__,
            expire_after=self._host_expiry,
        ):
            self._publish(topic, payload)
        for vm in vms:
            self._send_vm(vm)
        logger.info("Home Assistant discovery sent for host %s and %d VMs", self.host, len(vms))

    def vm_changed(self, vm: VmState) -> None:
        """A new VM, or a rename / vCPU / memory change: its configs again; else nothing."""
        with self._lock:
            unchanged = self._signatures.get(vm.uuid) == discovery.vm_signature(vm)
        if not unchanged:
            self._send_vm(vm)

    def vm_removed(self, uuid: str) -> None:
        with self._lock:
            self._signatures.pop(uuid, None)
        for topic, payload in discovery.vm_removals(self.host, uuid, self.ha_prefix):
            self._publish(topic, payload)

    def _send_vm(self, vm: VmState) -> None:
        with self._lock:
            self._signatures[vm.uuid] = discovery.vm_signature(vm)
        for topic, payload in discovery.vm_configs(
            self.host, vm, self.topics, self.ha_prefix, __version__, expire_after=self._vm_expiry
        ):
            self._publish(topic, payload)
