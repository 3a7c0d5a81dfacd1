"""The Home Assistant entities the agent offers per host and per VM, with their templates."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.messages import VM_STATES

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
AVAILABILITY_TEMPLATE = (
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
    # Taken with the guest's memory, named after the time (the agent's `snapshot` set word).
    _button("snapshot", "Take snapshot", "snapshot", True, icon="mdi:camera-outline"),
)
# What agents before the per-host layout published under per-VM node ids: the migration clears
# exactly these, and the broker's upgrade window (provision.sh --legacy-discovery) allows only
# these. Entities added since never existed there.
LEGACY_OBJECT_IDS = frozenset(
    {"power", "state", "cpu", "memory_used", "memory_percent", "disk_read", "disk_write"}
    | {"net_rx", "net_tx", "reboot", "force_off", "reset"}
)
LEGACY_VM_OBJECTS = tuple(s for s in VM_OBJECTS if s.object_id in LEGACY_OBJECT_IDS)
