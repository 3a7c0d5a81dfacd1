"""Home Assistant MQTT discovery configs (SPEC §6): pure builders of topics and payloads."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agent.homeassistant.entities import (
    AVAILABILITY_TEMPLATE,
    HOST_OBJECTS,
    LEGACY_VM_OBJECTS,
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


def vm_unique_stem(host: str, uuid: str) -> str:
    """Stem of a VM's unique_ids: `kvmsup_<host>_<uuid-hex>`. It was also the VM's node id until
    the node id became the host alone; unique_ids keep it, so Home Assistant keeps the entities,
    their history and the automations that use them."""
    return f"kvmsup_{validate_host_id(host)}_{uuid_hex(uuid)}"


def legacy_vm_node_id(host: str, uuid: str) -> str:
    """The node id of the earlier layout, `kvmsup_<host>_<uuid-hex>`: only for the migration.
    One topic level mixed host and VM there, which an ACL cannot pin to the host."""
    return vm_unique_stem(host, uuid)


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


HaStatus = Literal["online", "offline", "junk"]
_HA_STATUS_MAX = 64


def ha_status(payload: bytes) -> HaStatus:
    """What a message on `homeassistant/status` says; anything but the two words is junk (binary,
    huge, another tool's format), to be counted and ignored, never parsed further."""
    if len(payload) > _HA_STATUS_MAX:
        return "junk"
    word = payload.strip()
    if word == b"online":
        return "online"
    if word == b"offline":
        return "offline"
    return "junk"


def is_ha_online(payload: bytes) -> bool:
    return ha_status(payload) == "online"


# -- topics ----------------------------------------------------------------------------------
# Every config of a host, its VMs' included, sits under the node id `kvmsup_<host>` (SPEC §6):
# `<prefix>/<component>/kvmsup_<host>/<object>/config` for the host's own entities and
# `<prefix>/<component>/kvmsup_<host>/<uuid-hex>_<object>/config` for a VM's. A broker ACL
# matches whole levels only, so this layout is what lets it confine each agent to its own host.
def _config_topic(ha_prefix: str, spec: EntitySpec, node_id: str, object_prefix: str = "") -> str:
    prefix = validate_prefix(ha_prefix)
    return f"{prefix}/{spec.component}/{node_id}/{object_prefix}{spec.object_id}/config"


def host_config_topics(host: str, ha_prefix: str) -> list[str]:
    return [_config_topic(ha_prefix, spec, host_node_id(host)) for spec in HOST_OBJECTS]


def config_topics(host: str, uuid: str, ha_prefix: str) -> list[str]:
    """Every discovery config topic of one VM."""
    node, obj = host_node_id(host), f"{uuid_hex(uuid)}_"
    return [_config_topic(ha_prefix, spec, node, obj) for spec in VM_OBJECTS]


def legacy_config_topics(host: str, uuid: str, ha_prefix: str) -> list[str]:
    """Where agents before the per-host layout put a VM's configs (cleared by the migration)."""
    node = legacy_vm_node_id(host, uuid)
    return [_config_topic(ha_prefix, spec, node) for spec in LEGACY_VM_OBJECTS]


def vm_removals(
    host: str, uuid: str, ha_prefix: str, *, legacy: bool = True
) -> list[tuple[str, bytes]]:
    """Empty retained payloads for every config topic of a VM: HA deletes its entities. With
    `legacy`, the earlier layout's too, for a VM undefined while an old agent was still in charge
    or while the agent was down across the upgrade (only while the broker may still let the
    agent write there: once the upgrade window closes, each would be refused)."""
    topics = config_topics(host, uuid, ha_prefix)
    if legacy:
        topics += legacy_config_topics(host, uuid, ha_prefix)
    return [(topic, b"") for topic in topics]


# Home Assistant's MQTT discovery binds an entity to the topic it was discovered on (the
# discovery hash is component + node id + object id, not the unique_id), and for a topic change
# offers one handshake that keeps the entity registry entry (homeassistant/components/mqtt:
# discovery.py `_async_process_discovery_migration`, entity.py `MqttDiscoveryUpdateMixin.
# _async_discovery_callback` and `_async_process_discovery_update_and_remove`):
# 1. `{"migrate_discovery": true}` on the old topic: the entity is unloaded, registry entry kept
#    (a disabled entity is untracked from the old topic);
# 2. the config on the new topic: a new entity takes the kept registry entry, by unique_id, so
#    entity_id, name, area, device and history stay;
# 3. an empty retained payload on the old topic: nothing is loaded from it any more, so this only
#    removes the retained config from the broker.
# Other orders lose the entry: an empty old topic while the entity is loaded from it removes the
# entity from the registry (and the device with its last entity; recreated, it gets its registry
# id back but not a user's entity_id or name), and a config on the new topic while the old one
# still holds the unique_id is refused ("does not generate unique IDs") and forgotten, so the
# emptied old topic then removes the entity for good. tests/service/test_homeassistant_real.py
# checks this order against a real Home Assistant.
MIGRATE_PAYLOAD = b'{"migrate_discovery":true}'


def migration_markers(host: str, uuid: str, ha_prefix: str) -> list[tuple[str, bytes]]:
    """Step 1 of the handshake for one VM: the marker on each old-layout topic, not retained."""
    return [(topic, MIGRATE_PAYLOAD) for topic in legacy_config_topics(host, uuid, ha_prefix)]


def legacy_removals(host: str, uuid: str, ha_prefix: str) -> list[tuple[str, bytes]]:
    """Step 3 for one VM: the old-layout retained configs deleted from the broker."""
    return [(topic, b"") for topic in legacy_config_topics(host, uuid, ha_prefix)]


# -- payloads --------------------------------------------------------------------------------
def _origin(version: str, support_url: str | None) -> dict[str, str]:
    return {"name": ORIGIN_NAME, "sw_version": version} | (
        {"support_url": support_url} if support_url else {}
    )


@dataclass(frozen=True)
class _Context:
    """What every entity of one device shares."""

    node_id: str
    unique_stem: str
    object_prefix: str
    device: dict[str, Any]
    origin: dict[str, str]
    sources: Mapping[Source, str]
    command_topic: str | None
    expire_after: int | None


def _payload(spec: EntitySpec, ctx: _Context) -> bytes:
    config: dict[str, Any] = {"name": spec.name, "unique_id": f"{ctx.unique_stem}_{spec.object_id}"}
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


def _topic(ha_prefix: str, spec: EntitySpec, ctx: _Context) -> str:
    return _config_topic(ha_prefix, spec, ctx.node_id, ctx.object_prefix)


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
    node = host_node_id(host)
    device = host_device(host, status)
    ctx = _Context(node, node, "", device, origin, sources, None, expire_after)
    return [(_topic(ha_prefix, s, ctx), _payload(s, ctx)) for s in HOST_OBJECTS]


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
        host_node_id(host),
        vm_unique_stem(host, vm.uuid),
        f"{uuid_hex(vm.uuid)}_",
        vm_device(host, vm),
        origin,
        sources,
        command,
        expire_after,
    )
    return [(_topic(ha_prefix, s, ctx), _payload(s, ctx)) for s in VM_OBJECTS]
