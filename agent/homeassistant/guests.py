"""Home Assistant entities of what each VM's guest agent says: an IP address sensor, and one
usage sensor per filesystem, added and removed as the guest's filesystems come and go.

They read the retained `…/vm/<uuid>/guest` topic and belong to the VM's device (its model and
sizes come with the VM's other configs, so only its identifier and name are sent here).
Configs are sent from whichever thread reports the guest's message, through the non-blocking
`send` given; a republish asked for (Home Assistant came online, a reconnect) is only noted
and done at the next `flush`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any

from agent.homeassistant.discovery import (
    ORIGIN_NAME,
    host_node_id,
    uuid_hex,
    vm_device_id,
    vm_unique_stem,
)
from agent.homeassistant.entities import AVAILABILITY_TEMPLATE
from shared.guest import GuestInfo
from shared.topics import POLICY, Topics, validate_prefix

Send = Callable[[str, bytes], None]  # (config topic, retained payload; empty removes)

_IP_TEMPLATE = (
    "{% if value_json is defined and value_json.addresses %}"
    "{% set v4 = value_json.addresses | selectattr('family', 'eq', 'ipv4') | list %}"
    "{{ (v4 or value_json.addresses)[0].address }}{% else %}None{% endif %}"
)
_IP_ATTRIBUTES = (
    "{% if value_json is defined %}{{ {'addresses': value_json.addresses "
    "| map(attribute='address') | list, 'source': value_json.address_source, "
    "'hostname': value_json.hostname, 'status': value_json.status} | tojson }}"
    "{% else %}{}{% endif %}"
)


def _find(mountpoint: str) -> str:
    """Jinja: `f` = the filesystems at `mountpoint` (a list of at most one, in practice)."""
    literal = json.dumps(mountpoint)  # a JSON string is a valid Jinja string literal
    return (
        "{% set f = value_json.filesystems | selectattr('mountpoint', 'eq', "
        + literal
        + ") | list if value_json is defined and value_json.filesystems is defined else [] %}"
    )


def _usage_template(mountpoint: str) -> str:
    return _find(mountpoint) + (
        "{{ (100 * f[0].used_bytes / f[0].total_bytes) | round(1) "
        "if f and f[0].used_bytes is number and f[0].total_bytes else none }}"
    )


def _usage_attributes(mountpoint: str) -> str:
    return _find(mountpoint) + (
        "{{ {'mountpoint': f[0].mountpoint, 'type': f[0].type, 'used_bytes': "
        "f[0].used_bytes, 'total_bytes': f[0].total_bytes} | tojson if f else '{}' }}"
    )


def fs_object_id(mountpoint: str) -> str:
    """A filesystem's object id: a mountpoint may hold any character, an id only `[a-z0-9_]`."""
    return "fs_" + hashlib.sha256(mountpoint.encode()).hexdigest()[:16]


def guest_configs(
    host: str, guest: GuestInfo, topics: Topics, ha_prefix: str, version: str
) -> dict[str, bytes]:
    """config topic → retained payload, for the VM's IP sensor and each of its filesystems."""
    node, stem, hexid = host_node_id(host), vm_unique_stem(host, guest.uuid), uuid_hex(guest.uuid)
    prefix = validate_prefix(ha_prefix)
    common: dict[str, Any] = {
        "state_topic": topics.vm_guest(host, guest.uuid),
        "json_attributes_topic": topics.vm_guest(host, guest.uuid),
        "qos": POLICY["vm_guest"].qos,
        "availability": [
            {
                "topic": topics.host_status(host),
                "value_template": AVAILABILITY_TEMPLATE,
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
        "availability_mode": "latest",
        # The VM's device; its other facts come with the VM's own configs.
        "device": {"identifiers": [vm_device_id(host, guest.uuid)], "name": guest.name},
        "origin": {"name": ORIGIN_NAME, "sw_version": version},
    }
    entities: list[tuple[str, dict[str, Any]]] = [
        (
            "ip",
            {
                "name": "IP address",
                "value_template": _IP_TEMPLATE,
                "json_attributes_template": _IP_ATTRIBUTES,
                "icon": "mdi:ip-network",
            },
        )
    ]
    for fs in guest.filesystems:
        entities.append(
            (
                fs_object_id(fs.mountpoint),
                {
                    "name": f"Disk usage {fs.mountpoint}"[:200],
                    "value_template": _usage_template(fs.mountpoint),
                    "json_attributes_template": _usage_attributes(fs.mountpoint),
                    "unit_of_measurement": "%",
                    "state_class": "measurement",
                    "suggested_display_precision": 1,
                    "icon": "mdi:harddisk",
                },
            )
        )
    configs: dict[str, bytes] = {}
    for object_id, own in entities:
        config = {"unique_id": f"{stem}_{object_id}", **own, **common}
        topic = f"{prefix}/sensor/{node}/{hexid}_{object_id}/config"
        configs[topic] = json.dumps(config, ensure_ascii=False, separators=(",", ":")).encode()
    return configs


class GuestEntities:
    """What was sent for each VM; sends the difference when its guest's message changes."""

    def __init__(self, host: str, topics: Topics, ha_prefix: str, version: str, send: Send) -> None:
        self.host = host
        self.topics = topics
        self.ha_prefix = ha_prefix
        self.version = version
        self._send = send
        self._sent: dict[str, dict[str, bytes]] = {}
        self._lock = threading.Lock()
        self._wanted = False

    def changed(self, guest: GuestInfo) -> None:
        """New configs sent (a changed one again), those of vanished filesystems removed."""
        wanted = guest_configs(self.host, guest, self.topics, self.ha_prefix, self.version)
        with self._lock:
            held = self._sent.get(guest.uuid, {})
            self._sent[guest.uuid] = wanted
            for topic in held.keys() - wanted.keys():
                self._send(topic, b"")
            for topic, payload in wanted.items():
                if held.get(topic) != payload:
                    self._send(topic, payload)

    def removed(self, uuid: str) -> None:
        with self._lock:
            for topic in self._sent.pop(uuid, {}):
                self._send(topic, b"")

    def republish(self) -> None:
        """Any thread, never blocks: every config is sent again at the next `flush`."""
        self._wanted = True

    def flush(self) -> None:
        if not self._wanted:
            return
        self._wanted = False
        with self._lock:
            for configs in self._sent.values():
                for topic, payload in configs.items():
                    self._send(topic, payload)
