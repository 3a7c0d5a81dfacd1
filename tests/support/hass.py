"""What Home Assistant does with discovery configs, emulated for tests: its schema keys and units,
and its rendering of `value_template`s (Jinja2 over the raw payload and `value_json`)."""

from __future__ import annotations

import contextlib
import json
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
