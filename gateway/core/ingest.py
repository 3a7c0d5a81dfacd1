"""One raw MQTT message → the model it carries, or the reason it is dropped (pure, no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from shared.guest import GuestInfo
from shared.messages import (
    CommandReply,
    GatewayStatus,
    HostStatus,
    MetricsBatch,
    VmEvent,
    VmSnapshots,
    VmState,
)
from shared.topics import POLICY, Topics

# A metrics batch of a few hundred VMs is well under this; anything larger is not parsed.
MAX_MESSAGE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class VmRemoved:
    """An empty retained VM state: the VM is undefined on its host."""

    host: str
    uuid: str


@dataclass(frozen=True)
class SnapshotsCleared:
    """An empty retained snapshot list: the agent cleared it with its VM."""

    host: str
    uuid: str


@dataclass(frozen=True)
class GuestCleared:
    """An empty retained guest message: the VM is undefined, what its guest said goes too."""

    host: str
    uuid: str


@dataclass(frozen=True)
class Drop:
    """A message the gateway does not use, and why (a `gateway.core.drops` reason)."""

    reason: str
    detail: str


Inbound = (
    HostStatus
    | VmState
    | VmRemoved
    | MetricsBatch
    | VmEvent
    | CommandReply
    | GatewayStatus
    | VmSnapshots
    | SnapshotsCleared
    | GuestInfo
    | GuestCleared
)

_MODELS: dict[str, type[BaseModel]] = {
    "host_status": HostStatus,
    "vm_state": VmState,
    "host_metrics": MetricsBatch,
    "host_events": VmEvent,
    "reply": CommandReply,
    "gateway_status": GatewayStatus,
    "vm_snapshots": VmSnapshots,
    "vm_guest": GuestInfo,
}


# pydantic's error types for a value past a bound of `shared.messages` (a non-finite number,
# an integer or a float out of range, a string or a list too long).
OUT_OF_RANGE = frozenset(
    {
        "finite_number",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "string_too_long",
        "too_long",
    }
)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _has_non_finite(payload: bytes) -> bool:
    """pydantic's JSON parser takes NaN and Infinity, which Flask would then hand to REST
    clients as invalid JSON. A cheap byte test first: only suspects are parsed twice."""
    if b"NaN" not in payload and b"Infinity" not in payload:
        return False
    try:
        json.loads(payload, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        return True
    return False


def _refusal(exc: ValidationError) -> Drop:
    """Why a payload that did not validate is dropped: not JSON, a value past its bound, or
    not the model its topic carries; the first error, where it was."""
    errors = exc.errors(include_url=False)
    if not errors:
        return Drop("bad_schema", str(exc))
    first = errors[0]
    if first["type"] == "json_invalid":
        reason = "not_json"
    elif first["type"] in OUT_OF_RANGE:
        reason = "out_of_range"
    else:
        reason = "bad_schema"
    where = ".".join(map(str, first["loc"]))
    return Drop(reason, f"{where}: {first['msg']}" if where else first["msg"])


def decode(
    topics: Topics,
    gateway_id: str,
    topic: str,
    payload: bytes,
    *,
    retained: bool = False,
    correlation: bytes | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Inbound | Drop:
    """The model a message carries; a Drop for anything the gateway does not use. The topic
    is the authority on identity: a payload naming another host, VM or gateway is dropped."""
    parsed = topics.parse(topic)
    if parsed is None or parsed.kind not in _MODELS:
        return Drop("bad_topic", "not a topic the gateway reads")
    if parsed.kind == "reply" and parsed.gateway_id != gateway_id:
        return Drop("bad_topic", "a reply to another gateway")
    if retained and not POLICY[parsed.kind].retain:
        # Agents never retain metrics, events or replies: a retained one is stale or forged,
        # and would come back at every start of every gateway.
        return Drop("retained", "a retained message on a topic that is never retained")
    if not payload:
        if parsed.kind == "vm_state" and parsed.host and parsed.uuid:
            return VmRemoved(parsed.host, parsed.uuid)
        if parsed.kind == "vm_snapshots" and parsed.host and parsed.uuid:
            return SnapshotsCleared(parsed.host, parsed.uuid)
        if parsed.kind == "vm_guest" and parsed.host and parsed.uuid:
            return GuestCleared(parsed.host, parsed.uuid)
        return Drop("bad_schema", "empty payload")
    if len(payload) > max_bytes:
        return Drop("too_large", f"{len(payload)} bytes, over {max_bytes}")
    if _has_non_finite(payload):
        return Drop("not_json", "NaN or Infinity is not JSON")
    try:
        model = _MODELS[parsed.kind].model_validate_json(payload)
    except ValidationError as exc:
        return _refusal(exc)
    host = getattr(model, "host", None)
    if parsed.host is not None and host != parsed.host:
        return Drop("identity", f"the payload names host {host!r}")
    if isinstance(model, VmState | VmSnapshots | GuestInfo) and model.uuid != parsed.uuid:
        return Drop("identity", f"the state names VM {model.uuid!r}")
    if isinstance(model, GatewayStatus) and model.gateway != parsed.gateway_id:
        return Drop("identity", f"the status names gateway {model.gateway!r}")
    if isinstance(model, CommandReply) and (
        correlation is None or model.id is None or correlation != model.id.encode()
    ):
        # The MQTT v5 CorrelationData is what ties a reply to the request it answers.
        return Drop("identity", f"reply {model.id!r} carries correlation data {correlation!r}")
    return model  # type: ignore[return-value]
