"""The only place MQTT topics are built and parsed (SPEC §3), with their QoS/retain policy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

API_LEVEL = "v1"
GATEWAY_LEVEL = "gateway"

HOST_ID_PATTERN = "^[a-z0-9][a-z0-9_-]{0,62}$"  # as SPEC §2 writes it
# `\Z`, not `$`: `$` also matches before a trailing newline, which must never pass.
HOST_ID_RE = re.compile(HOST_ID_PATTERN[:-1] + r"\Z")
GATEWAY_ID_RE = HOST_ID_RE
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_PREFIX_LEVEL_RE = re.compile(r"^[A-Za-z0-9_-]+\Z")

TopicKind = Literal[
    "host_status",
    "host_metrics",
    "host_events",
    "vm_state",
    "vm_metrics",
    "vm_set",
    "vm_snapshots",
    "cmd",
    "reply",
    "gateway_status",
    "vm_guest",
]


@dataclass(frozen=True)
class Policy:
    qos: int
    retain: bool


# Who publishes what, and how (SPEC §3 table).
POLICY: dict[TopicKind, Policy] = {
    "host_status": Policy(1, True),
    "host_metrics": Policy(0, False),
    "host_events": Policy(1, False),
    "vm_state": Policy(1, True),
    "vm_metrics": Policy(0, False),
    "vm_set": Policy(1, False),
    "vm_snapshots": Policy(1, True),
    "cmd": Policy(1, False),
    "reply": Policy(1, False),
    "gateway_status": Policy(1, True),
    # What the guest agent says of a VM: retained, so a gateway that starts later knows it.
    "vm_guest": Policy(1, True),
}


class TopicError(ValueError):
    """An id that may not stand in a topic level."""


def validate_host_id(host: str) -> str:
    if not HOST_ID_RE.match(host) or host == GATEWAY_LEVEL:
        raise TopicError(
            f"invalid host id {host!r}: it must match {HOST_ID_PATTERN} and not be "
            f"{GATEWAY_LEVEL!r}"
        )
    return host


def validate_gateway_id(gateway_id: str) -> str:
    if not GATEWAY_ID_RE.match(gateway_id):
        raise TopicError(f"invalid gateway id {gateway_id!r}: it must match {HOST_ID_PATTERN}")
    return gateway_id


def validate_uuid(uuid: str) -> str:
    if not UUID_RE.match(uuid):
        raise TopicError(f"invalid VM uuid {uuid!r}: expected the canonical lowercase form")
    return uuid


def validate_prefix(prefix: str) -> str:
    levels = prefix.split("/")
    if not prefix or not all(_PREFIX_LEVEL_RE.match(level) for level in levels):
        raise TopicError(f"invalid topic prefix {prefix!r}: levels of [A-Za-z0-9_-] only")
    return prefix


@dataclass(frozen=True)
class ParsedTopic:
    kind: TopicKind
    host: str | None = None
    uuid: str | None = None
    gateway_id: str | None = None


class Topics:
    """Builds and parses `<prefix>/v1/...` topics; every id is validated before it is used."""

    def __init__(self, prefix: str = "kvmsup") -> None:
        self.prefix = validate_prefix(prefix)
        self.root = f"{prefix}/{API_LEVEL}"
        self._depth = len(self.root.split("/"))

    # -- building ---------------------------------------------------------------------------
    def host_status(self, host: str) -> str:
        return f"{self.root}/{validate_host_id(host)}/status"

    def host_metrics(self, host: str) -> str:
        return f"{self.root}/{validate_host_id(host)}/metrics"

    def host_events(self, host: str) -> str:
        return f"{self.root}/{validate_host_id(host)}/events"

    def vm_state(self, host: str, uuid: str) -> str:
        return f"{self.root}/{validate_host_id(host)}/vm/{validate_uuid(uuid)}/state"

    def vm_metrics(self, host: str, uuid: str) -> str:
        return f"{self.root}/{validate_host_id(host)}/vm/{validate_uuid(uuid)}/metrics"

    def vm_guest(self, host: str, uuid: str) -> str:
        return f"{self.root}/{validate_host_id(host)}/vm/{validate_uuid(uuid)}/guest"

    def vm_set(self, host: str, uuid: str) -> str:
        return f"{self.root}/{validate_host_id(host)}/vm/{validate_uuid(uuid)}/set"

    def vm_snapshots(self, host: str, uuid: str) -> str:
        return f"{self.root}/{validate_host_id(host)}/vm/{validate_uuid(uuid)}/snapshots"

    def cmd(self, host: str) -> str:
        return f"{self.root}/{validate_host_id(host)}/cmd"

    def reply(self, host: str, gateway_id: str) -> str:
        return f"{self.root}/{validate_host_id(host)}/reply/{validate_gateway_id(gateway_id)}"

    def gateway_status(self, gateway_id: str) -> str:
        return f"{self.root}/{GATEWAY_LEVEL}/{validate_gateway_id(gateway_id)}/status"

    # -- subscriptions ----------------------------------------------------------------------
    def agent_subscriptions(self, host: str) -> list[str]:
        """What an agent listens to: its own commands, plain `set`s and retained states."""
        host = validate_host_id(host)
        return [self.cmd(host), f"{self.root}/{host}/vm/+/set", f"{self.root}/{host}/vm/+/state"]

    def gateway_subscriptions(self, gateway_id: str) -> list[str]:
        """What a gateway listens to: every host's status, states, metrics, events, its replies."""
        validate_gateway_id(gateway_id)
        return [
            f"{self.root}/+/status",
            f"{self.root}/+/vm/+/state",
            f"{self.root}/+/vm/+/snapshots",
            f"{self.root}/+/metrics",
            f"{self.root}/+/events",
            f"{self.root}/+/reply/{gateway_id}",
            f"{self.root}/+/vm/+/guest",
        ]

    # -- parsing ----------------------------------------------------------------------------
    def parse(self, topic: str) -> ParsedTopic | None:
        """The kind and ids of a topic under this prefix, or None for anything else."""
        levels = topic.split("/")
        if "/".join(levels[: self._depth]) != self.root:
            return None
        rest = levels[self._depth :]
        if len(rest) == 3 and rest[0] == GATEWAY_LEVEL and rest[2] == "status":
            return _ok_gateway(rest[1])
        if not rest or not _is_host(rest[0]):
            return None
        host = rest[0]
        if len(rest) == 2 and rest[1] in ("status", "metrics", "events", "cmd"):
            kind: dict[str, TopicKind] = {
                "status": "host_status",
                "metrics": "host_metrics",
                "events": "host_events",
                "cmd": "cmd",
            }
            return ParsedTopic(kind[rest[1]], host=host)
        if len(rest) == 3 and rest[1] == "reply" and GATEWAY_ID_RE.match(rest[2]):
            return ParsedTopic("reply", host=host, gateway_id=rest[2])
        if len(rest) == 4 and rest[1] == "vm" and UUID_RE.match(rest[2]):
            vm_kinds: dict[str, TopicKind] = {
                "state": "vm_state",
                "metrics": "vm_metrics",
                "set": "vm_set",
                "snapshots": "vm_snapshots",
                "guest": "vm_guest",
            }
            if rest[3] in vm_kinds:
                return ParsedTopic(vm_kinds[rest[3]], host=host, uuid=rest[2])
        return None

    def reply_prefix(self, host: str) -> str:
        """Response topics an agent accepts must sit right under this (SPEC §3)."""
        return f"{self.root}/{validate_host_id(host)}/reply/"


def _is_host(level: str) -> bool:
    return bool(HOST_ID_RE.match(level)) and level != GATEWAY_LEVEL


def _ok_gateway(level: str) -> ParsedTopic | None:
    if not GATEWAY_ID_RE.match(level):
        return None
    return ParsedTopic("gateway_status", gateway_id=level)


def matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (`+` one level, `#` the rest), broker-free."""
    pat = pattern.split("/")
    top = topic.split("/")
    for i, level in enumerate(pat):
        if level == "#":
            return not (top and top[0].startswith("$") and i == 0)
        if i >= len(top):
            return False
        if level == "+":
            if i == 0 and top[0].startswith("$"):
                return False
            continue
        if level != top[i]:
            return False
    return len(pat) == len(top)
