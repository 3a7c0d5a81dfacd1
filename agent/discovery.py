"""Home Assistant MQTT discovery configs (SPEC §6): pure builders of topics and payloads."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.ha_entities import (
    AVAILABILITY_TEMPLATE,
    HOST_OBJECTS,
    VM_OBJECTS,
    EntitySpec,
    Signature,
    Source,
)
from shared.messages import HostStatus, VmState
from shared.topics import POLICY, Topics, validate_host_id, validate_prefix, validate_uuid

ORIGIN_NAME = "KVM Supervisor"
MANUFACTURER = "KVM Supervisor"
DISCOVERY_QOS = 1
DISCOVERY_RETAIN = True


# -- identities ------------------------------------------------------------------------------
# Entity names are short ("Power"): HA's MQTT entities always have has_entity_name set
# (mqtt/entity.py), so HA shows "<device name> Power". A `has_entity_name` key would be dropped
# by the discovery schema (vol.REMOVE_EXTRA), so none is sent.
def uuid_hex(uuid: str) -> str:
    return validate_uuid(uuid).replace("-", "")


def host_node_id(host: str) -> str:
    """Node id of the host device's discovery topics: `kvmsup_<host>`."""
    return f"kvmsup_{validate_host_id(host)}"


def vm_node_id(host: str, uuid: str) -> str:
    """Node id of a VM's discovery topics (and its unique_id stem): `kvmsup_<host>_<uuid-hex>`."""
    return f"kvmsup_{validate_host_id(host)}_{uuid_hex(uuid)}"


# Device identifiers get distinct prefixes: node ids alone could collide between host
# `h_<32 hex>` and a VM of host `h` (host ids may contain `_`).
def host_device_id(host: str) -> str:
    return f"kvmsup_host_{validate_host_id(host)}"


def vm_device_id(host: str, uuid: str) -> str:
    return f"kvmsup_vm_{validate_host_id(host)}_{uuid_hex(uuid)}"


def vm_signature(vm: VmState) -> Signature:
    """What the configs show of a VM: re-send them when this changes (rename, vCPUs, memory)."""
    return (vm.name, vm.vcpus, vm.memory_mb, vm.max_memory_mb)


def expire_after_for(interval_s: float, every: int = 1) -> int:
    """`expire_after` for a sensor fed every `every` ticks of `interval_s`: three periods missed."""
    return max(10, math.ceil(3 * interval_s * max(1, every)))


def ha_status_topic(ha_prefix: str) -> str:
    """Where Home Assistant announces `online` (then every config must be re-sent)."""
    return f"{validate_prefix(ha_prefix)}/status"


def is_ha_online(payload: bytes) -> bool:
    return payload.strip() == b"online"


# -- topics ----------------------------------------------------------------------------------
def _config_topic(ha_prefix: str, spec: EntitySpec, node_id: str) -> str:
    return f"{validate_prefix(ha_prefix)}/{spec.component}/{node_id}/{spec.object_id}/config"


def host_config_topics(host: str, ha_prefix: str) -> list[str]:
    return [_config_topic(ha_prefix, spec, host_node_id(host)) for spec in HOST_OBJECTS]


def config_topics(host: str, uuid: str, ha_prefix: str) -> list[str]:
    """Every discovery config topic of one VM."""
    return [_config_topic(ha_prefix, spec, vm_node_id(host, uuid)) for spec in VM_OBJECTS]


def vm_removals(host: str, uuid: str, ha_prefix: str) -> list[tuple[str, bytes]]:
    """Empty retained payloads for every config topic of a VM: HA deletes its entities."""
    return [(topic, b"") for topic in config_topics(host, uuid, ha_prefix)]


# -- payloads --------------------------------------------------------------------------------
def _origin(version: str, support_url: str | None) -> dict[str, str]:
    return {"name": ORIGIN_NAME, "sw_version": version} | (
        {"support_url": support_url} if support_url else {}
    )


@dataclass(frozen=True)
class _Context:
    """What every entity of one device shares."""

    node_id: str
    device: dict[str, Any]
    origin: dict[str, str]
    sources: Mapping[Source, str]
    command_topic: str | None
    expire_after: int | None


def _payload(spec: EntitySpec, ctx: _Context) -> bytes:
    config: dict[str, Any] = {"name": spec.name, "unique_id": f"{ctx.node_id}_{spec.object_id}"}
    qos = 0
    if spec.state_source is not None:
        config["state_topic"] = ctx.sources[spec.state_source]
        qos = POLICY[spec.state_source].qos
        if "json_attributes_template" in spec.options:
            config["json_attributes_topic"] = config["state_topic"]
        if spec.expires and ctx.expire_after:
            config["expire_after"] = ctx.expire_after
    if spec.commands:
        config["command_topic"] = ctx.command_topic
        qos = POLICY["vm_set"].qos
    config["qos"] = qos
    config.update(spec.options)
    # The connectivity sensor reads the status topic itself: availability would hide its OFF.
    if spec.state_source != "host_status":
        config["availability"] = [
            {
                "topic": ctx.sources["host_status"],
                "value_template": AVAILABILITY_TEMPLATE,
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]
        config["availability_mode"] = "latest"
    config["device"] = ctx.device
    config["origin"] = ctx.origin
    return json.dumps(config, ensure_ascii=False, separators=(",", ":")).encode()


def host_device(host: str, status: HostStatus | None) -> dict[str, Any]:
    device: dict[str, Any] = {
        "identifiers": [host_device_id(host)],
        "name": host,
        "manufacturer": MANUFACTURER,
        "model": "KVM host",
    }
    if status is not None:
        if status.hypervisor is not None:
            device["model"] = f"{status.hypervisor.type} {status.hypervisor.version} host"
        if status.agent_version:
            device["sw_version"] = status.agent_version
        if status.node is not None:
            device["hw_version"] = (
                f"{status.node.model}, {status.node.cpus} CPUs, {status.node.memory_mb} MiB"
            )
    return device


def vm_device(host: str, vm: VmState) -> dict[str, Any]:
    return {
        "identifiers": [vm_device_id(host, vm.uuid)],
        "name": vm.name,
        "manufacturer": MANUFACTURER,
        "model": "KVM virtual machine",
        "hw_version": f"{vm.vcpus} vCPU, {vm.memory_mb} MiB",
        "serial_number": vm.uuid,
        "via_device": host_device_id(host),
    }


def host_configs(
    host: str,
    status: HostStatus | None,
    topics: Topics,
    ha_prefix: str,
    origin_version: str,
    *,
    expire_after: int | None = None,
    support_url: str | None = None,
) -> list[tuple[str, bytes]]:
    """(topic, retained payload) of the host device's entities. `expire_after`: seconds without
    a metrics batch before the running-VM count goes unavailable (see `expire_after_for`)."""
    sources: dict[Source, str] = {
        "host_status": topics.host_status(host),
        "host_metrics": topics.host_metrics(host),
    }
    origin = _origin(origin_version, support_url)
    ctx = _Context(
        host_node_id(host), host_device(host, status), origin, sources, None, expire_after
    )
    return [(_config_topic(ha_prefix, s, ctx.node_id), _payload(s, ctx)) for s in HOST_OBJECTS]


def vm_configs(
    host: str,
    vm: VmState,
    topics: Topics,
    ha_prefix: str,
    origin_version: str,
    *,
    expire_after: int | None = None,
    support_url: str | None = None,
) -> list[tuple[str, bytes]]:
    """(topic, retained payload) of one VM's entities. `expire_after`: seconds without a per-VM
    metrics message before its metric sensors go unavailable (see `expire_after_for`)."""
    sources: dict[Source, str] = {
        "host_status": topics.host_status(host),
        "vm_state": topics.vm_state(host, vm.uuid),
        "vm_metrics": topics.vm_metrics(host, vm.uuid),
    }
    origin = _origin(origin_version, support_url)
    command = topics.vm_set(host, vm.uuid)
    ctx = _Context(
        vm_node_id(host, vm.uuid), vm_device(host, vm), origin, sources, command, expire_after
    )
    return [(_config_topic(ha_prefix, s, ctx.node_id), _payload(s, ctx)) for s in VM_OBJECTS]
