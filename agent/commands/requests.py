"""Decoding of inbound `cmd` and `set` messages into requests or rejections (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from shared.messages import ACTIONS, CommandParams, CommandRequest, ErrorInfo
from shared.snapshots import SnapshotCreateParams
from shared.topics import GATEWAY_ID_RE

MAX_COMMAND_BYTES = 64 * 1024

# Plain `set` payloads (SPEC §3): Home Assistant's switch sends ON/OFF.
SET_ACTIONS = {"ON": "start", "OFF": "shutdown", **{a.upper(): a for a in ACTIONS}}
# The one snapshot action a plain `set` may ask for (Home Assistant's "Take snapshot" button):
# taking one, under a name made of the time it was asked. Reverting or deleting one destroys
# state and needs a name: never from a bare word.
SET_SNAPSHOT = "SNAPSHOT"
# A plain `set` carries no deadline of its own: its action may begin up to this long after it
# arrived, like a gateway's request with a generous `not_after`.
SET_BEGIN_WITHIN = timedelta(seconds=30)
# The latest `not_after` accepted, from now: the agent remembers each id until its `not_after`
# (so that a redelivered copy never runs twice), and an unbounded one would pin it forever.
# The gateway sends now + KVMSUP_ACCEPT_TIMEOUT (5 s by default).
MAX_BEGIN_WITHIN = timedelta(minutes=10)


@dataclass(frozen=True)
class Rejection:
    """Why a request is refused before it runs; `id` is what could be recovered of it."""

    code: str
    message: str
    id: str | None = None
    action: str | None = None
    vm: str | None = None

    @property
    def error(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message)


def valid_response_topic(topic: str | None, reply_prefix: str) -> bool:
    """The reply must go to `<prefix>/v1/<this host>/reply/<gateway_id>`, nowhere else."""
    if not topic or not topic.startswith(reply_prefix):
        return False
    return bool(GATEWAY_ID_RE.match(topic[len(reply_prefix) :]))


def _short(errors: ValidationError) -> str:
    parts = []
    for err in errors.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def decode_command(
    payload: bytes, correlation: bytes | None, now: datetime
) -> CommandRequest | Rejection:
    """A CommandRequest that may run now, or the reason it may not."""
    corr_id = correlation_text(correlation)
    if len(payload) > MAX_COMMAND_BYTES:
        return Rejection(
            "too_large", f"payload of {len(payload)} bytes exceeds {MAX_COMMAND_BYTES}", corr_id
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return Rejection("bad_request", "payload is not valid UTF-8", corr_id)
    try:
        request = CommandRequest.model_validate_json(text)
    except ValidationError as exc:
        return Rejection("bad_request", _short(exc), corr_id)
    if corr_id is not None and corr_id != request.id:
        return Rejection(
            "bad_request",
            "CorrelationData differs from the request id",
            corr_id,
            request.action,
            request.vm,
        )
    if request.not_after < now:
        return Rejection(
            "expired",
            f"request expired at {request.not_after.isoformat()}",
            request.id,
            request.action,
            request.vm,
        )
    if request.not_after > now + MAX_BEGIN_WITHIN:
        return Rejection(
            "bad_request",
            f"not_after is more than {MAX_BEGIN_WITHIN.total_seconds() / 60:.0f} minutes ahead",
            request.id,
            request.action,
            request.vm,
        )
    return request


def decode_set(
    payload: bytes, uuid: str, request_id: str, now: datetime
) -> CommandRequest | Rejection:
    """A plain `set` payload (`ON`, `OFF`, an action name) as a request run on behalf of MQTT."""
    try:
        word = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return Rejection("bad_request", "payload is not valid UTF-8", request_id, vm=uuid)
    if word.upper() == SET_SNAPSHOT:
        return CommandRequest(
            id=request_id,
            action="snapshot_create",
            vm=uuid,
            params=snapshot_from_set(now),
            by="mqtt-set",
            ts=now,
            not_after=now + SET_BEGIN_WITHIN,
        )
    action = SET_ACTIONS.get(word.upper()) if len(word) <= 16 else None
    if action is None:
        shown = word[:32]
        return Rejection(
            "unknown_action",
            f"{shown!r} is not one of ON, OFF, {', '.join(ACTIONS)}, snapshot",
            request_id,
            vm=uuid,
        )
    return CommandRequest(
        id=request_id,
        action=action,
        vm=uuid,
        params=CommandParams(),
        by="mqtt-set",
        ts=now,
        not_after=now + SET_BEGIN_WITHIN,
    )


def snapshot_from_set(now: datetime) -> SnapshotCreateParams:
    """A snapshot asked for by a bare word: named after the UTC second it was asked (two
    presses within one second make one snapshot: the second is refused `snapshot_exists`)."""
    return SnapshotCreateParams(
        name=f"ha-{now.strftime('%Y%m%d-%H%M%S')}",
        description="taken from Home Assistant",
        memory=True,
    )


def correlation_text(data: bytes | None) -> str | None:
    """A request id recovered from MQTT CorrelationData (hex when it is not UTF-8)."""
    if data is None:
        return None
    try:
        return data.decode("utf-8")[:128]
    except UnicodeDecodeError:
        return data.hex()[:128]
