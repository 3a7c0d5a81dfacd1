"""What Home Assistant does with discovery configs, emulated for tests: its schema keys and units,
its rendering of `value_template`s (Jinja2 over the raw payload and `value_json`), and its
discovery bookkeeping (which topic owns which entity, and when the registry entry goes)."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

# What Home Assistant's MQTT platforms require and accept (homeassistant/components/mqtt:
# config.py MQTT_RO_SCHEMA/MQTT_RW_SCHEMA, schemas.py MQTT_ENTITY_COMMON_SCHEMA, sensor.py,
# binary_sensor.py, switch.py, button.py). Discovery schemas drop unknown keys silently
# (vol.REMOVE_EXTRA), so a misspelt key would be lost without a word: check against the list.
REQUIRED = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "switch": {"command_topic"},
    "button": {"command_topic"},
}
COMMON = {
    "name",
    "unique_id",
    "device",
    "origin",
    "availability",
    "availability_mode",
    "qos",
    "encoding",
    "enabled_by_default",
    "entity_category",
    "icon",
    "json_attributes_topic",
    "json_attributes_template",
    "object_id",
    "default_entity_id",
    "entity_picture",
}
ACCEPTED = {
    "sensor": {
        "state_topic",
        "value_template",
        "device_class",
        "expire_after",
        "force_update",
        "last_reset_value_template",
        "options",
        "suggested_display_precision",
        "state_class",
        "unit_of_measurement",
    },
    "binary_sensor": {
        "state_topic",
        "value_template",
        "device_class",
        "expire_after",
        "force_update",
        "off_delay",
        "payload_on",
        "payload_off",
    },
    "switch": {
        "command_topic",
        "command_template",
        "state_topic",
        "value_template",
        "device_class",
        "optimistic",
        "payload_on",
        "payload_off",
        "state_on",
        "state_off",
        "retain",
    },
    "button": {"command_topic", "command_template", "device_class", "payload_press", "retain"},
}
# homeassistant/const.py UnitOfDataRate / UnitOfInformation, and sensor/const.py
# DEVICE_CLASS_UNITS / DEVICE_CLASS_STATE_CLASSES for these classes.
UNITS = {
    "data_rate": {
        "bit/s",
        "kbit/s",
        "Mbit/s",
        "Gbit/s",
        "B/s",
        "kB/s",
        "MB/s",
        "GB/s",
        "KiB/s",
        "MiB/s",
        "GiB/s",
    },
    "data_size": {
        "bit",
        "kbit",
        "Mbit",
        "Gbit",
        "B",
        "kB",
        "MB",
        "GB",
        "TB",
        "PB",
        "EB",
        "ZB",
        "YB",
        "KiB",
        "MiB",
        "GiB",
        "TiB",
        "PiB",
        "EiB",
        "ZiB",
        "YiB",
    },
}
STATE_CLASSES = {
    "data_rate": {"measurement"},
    "data_size": {"measurement", "total", "total_increasing"},
}


ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
PLAIN_FILTERS = {"map", "reject", "list", "sum", "tojson"}


def render(template: str, payload: bytes) -> str:
    raw = payload.decode()
    variables: dict[str, Any] = {"value": raw}
    with contextlib.suppress(ValueError):
        variables["value_json"] = json.loads(raw)
    return ENV.from_string(template).render(variables).strip()


def ha_number(rendered: str) -> float | None:
    """What an HA numeric sensor stores: `None` → unknown, anything else must parse as float."""
    if rendered == "None":
        return None
    return float(rendered)


def templates(config: dict[str, Any]) -> list[str]:
    found = [config[k] for k in ("value_template", "json_attributes_template") if k in config]
    return found + [a["value_template"] for a in config.get("availability", [])]


# -- discovery bookkeeping -------------------------------------------------------------------
# What Home Assistant does with the messages on its discovery topics, after the 2026.11 source
# (homeassistant/components/mqtt/discovery.py `async_discovery_message_received`,
# `async_process_discovery_payload`, `_async_process_discovery_migration`; entity.py
# `MqttDiscoveryUpdateMixin._async_discovery_callback`, `_async_remove_state_and_registry_entry`,
# `MqttEntity._init_entity_registry`; helpers/entity_platform.py `_async_add_entity`), reduced to
# what a test can observe: the entity registry (ids, entity_ids, user names), the devices, which
# topic each loaded entity is bound to, and what was refused or removed on the way.
DISCOVERY_TOPIC = re.compile(
    r"^(?P<component>\w+)/(?:(?P<node>[a-zA-Z0-9_-]+)/)?(?P<object>[a-zA-Z0-9_-]+)/config$"
)


@dataclass
class RegistryEntry:
    id: str  # the registry's own id: a new one means the entry was recreated
    entity_id: str
    unique_id: str
    device_id: str
    disabled: bool
    name: str | None = None  # a user's rename, kept with the entry


@dataclass
class Loaded:
    topic: str
    key: tuple[str, str]  # (component, unique_id)
    payload: dict[str, Any]


@dataclass
class HassDiscovery:
    """Home Assistant's side of MQTT discovery, fed one message at a time in broker order."""

    prefix: str = "homeassistant"
    registry: dict[tuple[str, str], RegistryEntry] = field(default_factory=dict)
    deleted: dict[tuple[str, str], RegistryEntry] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)  # first identifier -> device id
    deleted_devices: dict[str, str] = field(default_factory=dict)  # restored like entries
    loaded: dict[tuple[str, str], Loaded] = field(default_factory=dict)  # by discovery hash
    disabled: dict[tuple[str, str], Loaded] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # "does not generate unique IDs"
    removed: list[str] = field(default_factory=list)  # entity_ids removed from the registry
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def receive(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(f"{self.prefix}/"):
            return
        match = DISCOVERY_TOPIC.match(topic[len(self.prefix) + 1 :])
        if match is None:
            return
        component, node, obj = match.group("component", "node", "object")
        # The discovery hash is made of the topic's ids; the unique_id plays no part in it.
        hsh = (component, f"{node} {obj}" if node else obj)
        config: dict[str, Any] = json.loads(payload) if payload else {}
        migrate = config.pop("migrate_discovery", False) is True
        if migrate:
            config = {}
        if hsh in self.loaded:
            entity = self.loaded[hsh]
            if not config:
                del self.loaded[hsh]
                if not migrate:  # an emptied topic takes the registry entry with it
                    self._remove(entity.key)
            else:
                entity.payload = config
            return
        if not config:
            gone = self.disabled.pop(hsh, None)
            if gone is not None and not migrate:
                self._remove(gone.key)
            return
        key = (component, config["unique_id"])
        if any(e.key == key for e in self.loaded.values()):
            self.refused.append(topic)  # and the discovery hash is forgotten
            return
        entry = self.registry.get(key) or self._create(key, config)
        device_id = self._device(config["device"])
        entry.device_id = device_id
        if entry.disabled:
            self.disabled[hsh] = Loaded(topic, key, config)
        else:
            self.loaded[hsh] = Loaded(topic, key, config)

    def _create(self, key: tuple[str, str], config: dict[str, Any]) -> RegistryEntry:
        # A deleted entry gives back its registry id only (entity_registry.py async_get_or_create
        # in 2025.4, seen live: a user's entity_id and name are gone; 2026.x restores more).
        restored = self.deleted.pop(key, None)
        taken = {e.entity_id for e in self.registry.values()}
        base = f"{key[0]}.{config['device']['name']}_{config['name']}".lower().replace(" ", "_")
        entity_id, n = base, 1
        while entity_id in taken:
            n += 1
            entity_id = f"{base}_{n}"
        entry = RegistryEntry(
            id=restored.id if restored else f"r{next(self._ids)}",
            entity_id=entity_id,
            unique_id=key[1],
            device_id="",
            disabled=config.get("enabled_by_default", True) is False,
        )
        self.registry[key] = entry
        return entry

    def _device(self, device: dict[str, Any]) -> str:
        ident = device["identifiers"][0]
        if ident not in self.devices:
            self.devices[ident] = self.deleted_devices.pop(ident, None) or f"d{next(self._ids)}"
        return self.devices[ident]

    def _remove(self, key: tuple[str, str], cascade: bool = True) -> None:
        entry = self.registry.pop(key, None)
        if entry is None:  # gone with its device already
            return
        self.deleted[key] = entry
        self.removed.append(entry.entity_id)
        if not cascade:
            return
        # mqtt/util.py async_cleanup_device_registry: a device with no enabled entity left goes,
        # and its disabled entities with it.
        rest = [e for e in self.registry.values() if e.device_id == entry.device_id]
        if not any(not e.disabled for e in rest):
            for e in rest:
                self._remove((e.entity_id.split(".")[0], e.unique_id), cascade=False)
            for ident, dev in list(self.devices.items()):
                if dev == entry.device_id:
                    self.deleted_devices[ident] = self.devices.pop(ident)

    def entities(self) -> dict[str, RegistryEntry]:
        """Every registry entry by unique_id."""
        return {e.unique_id: e for e in self.registry.values()}

    def bound(self) -> dict[str, str]:
        """unique_id -> the topic its entity (loaded, or disabled and tracked) is bound to."""
        both = list(self.loaded.values()) + list(self.disabled.values())
        return {e.key[1]: e.topic for e in both}
