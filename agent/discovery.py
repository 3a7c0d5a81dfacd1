"""Home Assistant MQTT discovery configs (SPEC §6): pure builders of topics and payloads."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.messages import VM_STATES, HostStatus, VmState
from shared.topics import POLICY, Topics, validate_host_id, validate_prefix, validate_uuid

ORIGIN_NAME = "KVM Supervisor"
MANUFACTURER = "KVM Supervisor"
DISCOVERY_QOS = 1
DISCOVERY_RETAIN = True

Component = Literal["switch", "sensor", "binary_sensor", "button"]
Source = Literal["host_status", "host_metrics", "vm_state", "vm_metrics"]
Signature = tuple[str, int, int, int]

# States in which the guest exists in memory: the power switch shows ON (an OFF then shuts it
# down). `shutting_down` stays ON so the switch does not snap back while a shutdown is running;
# the `state` enum sensor says what is going on.
POWERED_STATES = ("running", "paused", "shutting_down", "suspended")

# HA renders value templates with `value` (raw payload) and, only when it parses as JSON,
# `value_json`; a template error is logged and the message dropped. The retained state topic is
# emptied when a VM is undefined, so templates on it check `value_json is defined`. Rendering
# `None` makes HA store an unknown state (mqtt/sensor.py and switch.py compare to PAYLOAD_NONE).
_AVAILABILITY_TEMPLATE = (
    "{{ 'online' if value_json is defined and value_json.online else 'offline' }}"
)
_CONNECTIVITY_TEMPLATE = "{{ 'ON' if value_json is defined and value_json.online else 'OFF' }}"
_POWER_TEMPLATE = (
    "{% if value_json is defined and value_json.state is defined %}"
    "{{ 'ON' if value_json.state in " + json.dumps(list(POWERED_STATES)) + " else 'OFF' }}"
    "{% else %}None{% endif %}"
)
_STATE_TEMPLATE = (
    "{{ value_json.state if value_json is defined and value_json.state is defined else none }}"
)
_STATE_ATTRIBUTES = ("reason", "vcpus", "memory_mb", "max_memory_mb", "autostart", "persistent")
_ATTRIBUTE_DICT = "{" + ", ".join(f"'{k}': value_json.{k}" for k in _STATE_ATTRIBUTES) + "}"
_STATE_ATTRIBUTES_TEMPLATE = (
    "{% if value_json is defined %}{{ " + _ATTRIBUTE_DICT + " | tojson }}{% else %}{}{% endif %}"
)


def _number(path: str) -> str:
    """A template giving the number at `value_json.<path>`, or None (unknown) when null."""
    return f"{{{{ value_json.{path} if value_json.{path} is number else none }}}}"


def _rate_sum(items: str, key: str) -> str:
    """Sum of `value_json.<items>[*].<key>` over non-null entries, None when there are none
    (first sample after a start: no rate yet; a VM without disks or NICs: nothing to add)."""
    return (
        f"{{% set r = value_json.{items} | map(attribute='{key}') | reject('none') | list %}}"
        "{{ r | sum if r else none }}"
    )


@dataclass(frozen=True)
class EntitySpec:
    """One Home Assistant entity: its component, object id, short name and fixed options."""

    component: Component
    object_id: str
    name: str
    state_source: Source | None = None
    commands: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def expires(self) -> bool:
        """Fed by a non-retained periodic topic: the value must go stale when it stops."""
        return self.state_source in ("host_metrics", "vm_metrics")


def _sensor(
    name: str, object_id: str, template: str, unit: str, precision: int, **extra: str
) -> EntitySpec:
    """A metric sensor over the per-VM metrics topic; `extra` adds device_class, icon."""
    options: dict[str, Any] = {"value_template": template, "unit_of_measurement": unit}
    options |= {"state_class": "measurement", "suggested_display_precision": precision}
    return EntitySpec("sensor", object_id, name, "vm_metrics", options=options | extra)


def _rate(name: str, object_id: str, items: str, key: str) -> EntitySpec:
    return _sensor(name, object_id, _rate_sum(items, key), "B/s", 0, device_class="data_rate")


def _button(object_id: str, name: str, press: str, enabled: bool, **extra: str) -> EntitySpec:
    options: dict[str, Any] = {"payload_press": press, "retain": False}
    if not enabled:
        options["enabled_by_default"] = False
    return EntitySpec("button", object_id, name, commands=True, options=options | extra)


_CONNECTIVITY = {
    "device_class": "connectivity",
    "value_template": _CONNECTIVITY_TEMPLATE,
    "payload_on": "ON",
    "payload_off": "OFF",
}
_VMS_RUNNING = {
    "value_template": _number("host_metrics.vms_running"),
    "state_class": "measurement",
    "icon": "mdi:server",
}
_POWER = {
    "value_template": _POWER_TEMPLATE,
    "payload_on": "ON",
    "payload_off": "OFF",
    "optimistic": False,
    "retain": False,
    "icon": "mdi:power",
}
_STATE = {
    "device_class": "enum",
    "options": list(VM_STATES),
    "value_template": _STATE_TEMPLATE,
    "json_attributes_template": _STATE_ATTRIBUTES_TEMPLATE,
}

HOST_OBJECTS: tuple[EntitySpec, ...] = (
    # No availability on it: it must read OFF (not unavailable) when the agent's will fires.
    EntitySpec("binary_sensor", "connectivity", "Agent", "host_status", options=_CONNECTIVITY),
    EntitySpec("sensor", "vms_running", "Running VMs", "host_metrics", options=_VMS_RUNNING),
)

VM_OBJECTS: tuple[EntitySpec, ...] = (
    EntitySpec("switch", "power", "Power", "vm_state", commands=True, options=_POWER),
    EntitySpec("sensor", "state", "State", "vm_state", options=_STATE),
    _sensor("CPU", "cpu", _number("cpu_percent"), "%", 1, icon="mdi:cpu-64-bit"),
    _sensor(
        "Memory used",
        "memory_used",
        _number("memory_used_mb"),
        "MiB",
        0,
        device_class="data_size",
        icon="mdi:memory",
    ),
    _sensor("Memory usage", "memory_percent", _number("memory_percent"), "%", 1, icon="mdi:memory"),
    _rate("Disk read", "disk_read", "disk_io", "read_bps"),
    _rate("Disk write", "disk_write", "disk_io", "write_bps"),
    _rate("Network receive", "net_rx", "network_io", "rx_bps"),
    _rate("Network transmit", "net_tx", "network_io", "tx_bps"),
    _button("reboot", "Reboot", "reboot", True, device_class="restart"),
    _button("force_off", "Force off", "destroy", False, icon="mdi:power-plug-off"),
    _button("reset", "Reset", "reset", False, device_class="restart", icon="mdi:restart-alert"),
)


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
                "value_template": _AVAILABILITY_TEMPLATE,
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
