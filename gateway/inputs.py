"""What a client sends, checked once for REST and Socket.IO alike: event payloads, text and
number fields, query numbers, and a command's verb, body and wait. Each bad value is an
InvalidInput (400), never a crash further down."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from gateway.errors import InvalidInput
from shared.messages import PARAMS_OF, ActionParams, CommandParams

MAX_TEXT = 1024  # longest name, host or action accepted in an event; an error quotes it

# Seed route verb → (action, action when {"force": true}).
VERBS: dict[str, tuple[str, str]] = {
    "start": ("start", "start"),
    "stop": ("shutdown", "destroy"),
    "restart": ("reboot", "reset"),
    "suspend": ("suspend", "suspend"),
    "resume": ("resume", "resume"),
}


def payload(data: Any, event: str, *, required: bool = False) -> dict[str, Any]:
    """An event's payload: a JSON object (absent is `{}` unless `required`)."""
    if data is None and not required:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{event} takes a JSON object")
    return data


def text(data: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    """A string field: absent (or empty, for an optional one) is None; anything that is not a
    string of sane length and valid UTF-8 is a 400, never a crash further down."""
    value = data.get(key)
    if value is None or (value == "" and not required):
        if required:
            raise InvalidInput(f"{key} is required")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{key} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{key} is longer than {MAX_TEXT} characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidInput(f"{key} is not valid UTF-8 text") from None
    return value


def number(data: dict[str, Any], key: str) -> float | None:
    """A JSON number field (not a bool, not a string); absent is None."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{key} must be {_what(float)}")
    return float(value)


def query_number(value: str, name: str, kind: type[float] | type[int]) -> Any:
    """A number of a query string (`?minutes=`, `?limit=`), of `kind`."""
    try:
        return kind(value)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be {_what(kind)}") from exc


def _what(kind: type[float] | type[int]) -> str:
    return "an integer" if kind is int else "a number"


def command_of(verb: str, body: Any) -> tuple[str, CommandParams]:
    """The agent action and params a seed-style verb and optional JSON body ask for."""
    if verb not in VERBS:
        raise InvalidInput(f"unknown action {verb!r}; expected one of {', '.join(VERBS)}")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise InvalidInput("force must be true or false")
    action = VERBS[verb][1] if force else VERBS[verb][0]
    raw = {k: body[k] for k in ("timeout_s", "force_after") if k in body}
    if raw and action != "shutdown":
        raise InvalidInput("timeout_s and force_after apply to a graceful stop only")
    try:
        params = CommandParams.model_validate(raw, strict=True)  # 0 is no bool, as for force
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
    return action, params


# What a snapshot route's body may hold, per action; `confirm` is checked by the caller.
SNAPSHOT_BODY_KEYS: dict[str, tuple[str, ...]] = {
    "snapshot_create": ("name", "description", "memory", "timeout_s"),
    "snapshot_revert": ("confirm", "timeout_s"),
    "snapshot_delete": ("confirm", "timeout_s"),
}


def snapshot_command_of(action: str, snapshot: str | None, body: Any) -> ActionParams:
    """The params of a snapshot action from its route's body (and, but for a create, the
    snapshot named in its path); an unknown key is a 400, as a typo must not pass unseen."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    allowed = SNAPSHOT_BODY_KEYS[action]
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; expected {', '.join(allowed)}")
    raw = {k: v for k, v in body.items() if k != "confirm"}
    if snapshot is not None:
        raw["name"] = snapshot
    try:
        params: ActionParams = PARAMS_OF[action].model_validate(raw, strict=True)  # type: ignore[assignment]
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
    return params


def parse_wait(value: Any, default: float, cap: float) -> float:
    """A command's `wait`: seconds from a query string (REST) or a JSON number (Socket.IO)."""
    if value is None or value == "":
        return default
    try:
        wait = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("wait must be a number of seconds") from exc
    if not 0 <= wait <= cap:
        raise InvalidInput(f"wait must be between 0 and {cap:g} seconds")
    return wait
