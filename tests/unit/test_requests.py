"""Decoding inbound `cmd` and `set` messages: what runs, and why the rest is refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.commands.requests import (
    MAX_COMMAND_BYTES,
    Rejection,
    decode_command,
    decode_set,
    valid_response_topic,
)
from shared.messages import CommandRequest
from shared.topics import Topics

pytestmark = pytest.mark.unit

U = "0f1e2d3c-4b5a-4968-8776-655443322110"
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def body(**kw: Any) -> bytes:
    data: dict[str, Any] = {
        "v": 1,
        "ts": "2026-11-26T11:59:59Z",
        "id": "req-1",
        "action": "shutdown",
        "vm": U,
        "by": "alice",
        "not_after": (NOW + timedelta(seconds=5)).isoformat(),
    }
    data.update(kw)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


def rejected(result: CommandRequest | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


# -- decode_command -------------------------------------------------------------------------
def test_valid_request() -> None:
    req = decode_command(
        body(
            params={"timeout_s": 30, "force_after": True},
            not_after=(NOW + timedelta(seconds=30)).isoformat(),
        ),
        b"req-1",
        NOW,
    )
    assert isinstance(req, CommandRequest)
    assert (req.id, req.action, req.vm, req.by) == ("req-1", "shutdown", U, "alice")
    assert req.params.timeout_s == 30
    assert req.params.force_after is True


def test_valid_request_without_correlation_data() -> None:
    assert isinstance(decode_command(body(), None, NOW), CommandRequest)


def test_too_large() -> None:
    payload = body(by="x" * MAX_COMMAND_BYTES)
    r = rejected(decode_command(payload, b"req-1", NOW))
    assert r.code == "too_large"
    assert r.id == "req-1"
    assert str(len(payload)) in r.message


def test_just_under_the_limit_is_read() -> None:
    # Filled with a field the model ignores: every field it reads has a bound of its own.
    payload = body(note="")
    payload = body(note="x" * (MAX_COMMAND_BYTES - len(payload)))
    assert len(payload) == MAX_COMMAND_BYTES
    assert isinstance(decode_command(payload, None, NOW), CommandRequest)


def test_invalid_utf8() -> None:
    r = rejected(decode_command(b'{"id":"\xff\xfe"}', b"req-9", NOW))
    assert r.code == "bad_request"
    assert "UTF-8" in r.message
    assert r.id == "req-9"


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1,2]", b'{"id": "req-1",', b"null"])
def test_not_json(payload: bytes) -> None:
    r = rejected(decode_command(payload, b"req-7", NOW))
    assert r.code == "bad_request"
    assert r.id == "req-7"  # recovered from CorrelationData, so the gateway can match the reply


def test_unparsable_without_correlation_has_no_id() -> None:
    r = rejected(decode_command(b"garbage", None, NOW))
    assert r.code == "bad_request"
    assert r.id is None


def test_binary_correlation_data_is_kept_readable() -> None:
    r = rejected(decode_command(b"garbage", b"\xff\x01", NOW))
    assert r.id == "ff01"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"action": "explode"}, "action"),
        ({"action": 3}, "action"),
        ({"id": 17}, "id"),
        ({"id": " "}, "id"),
        ({"vm": ["x"]}, "vm"),
        ({"params": {"timeout_s": 0}}, "params.timeout_s"),
        ({"params": {"timeout_s": "long"}}, "params.timeout_s"),
        ({"params": {"force_after": "perhaps"}}, "params.force_after"),
        ({"not_after": "later"}, "not_after"),
    ],
)
def test_wrong_types_name_the_field(changes: dict[str, Any], field: str) -> None:
    r = rejected(decode_command(body(**changes), None, NOW))
    assert r.code == "bad_request"
    assert r.message.startswith(f"{field}:") or f"; {field}:" in r.message, r.message


def test_missing_field_is_named() -> None:
    data = json.loads(body())
    del data["action"]
    r = rejected(decode_command(json.dumps(data).encode(), b"req-1", NOW))
    assert r.code == "bad_request"
    assert "action" in r.message
    assert r.id == "req-1"


def test_correlation_mismatch() -> None:
    r = rejected(decode_command(body(), b"someone-else", NOW))
    assert r.code == "bad_request"
    assert "CorrelationData" in r.message
    assert r.id == "someone-else"  # the reply goes back under the id the requester waits on
    assert (r.action, r.vm) == ("shutdown", U)


def test_expired() -> None:
    past = (NOW - timedelta(seconds=1)).isoformat()
    r = rejected(decode_command(body(not_after=past), b"req-1", NOW))
    assert r.code == "expired"
    assert (r.id, r.action, r.vm) == ("req-1", "shutdown", U)
    assert r.error.code == "expired"


def test_not_after_in_the_future_or_now_is_accepted() -> None:
    for when in (NOW, NOW + timedelta(minutes=1)):
        assert isinstance(
            decode_command(body(not_after=when.isoformat()), None, NOW), CommandRequest
        )


def test_a_request_without_not_after_is_refused_as_bad_request() -> None:
    # No deadline, no way to promise when the action stops being possible: refused, with the
    # id kept so the sender hears about it.
    r = rejected(decode_command(body(not_after=None), b"req-1", NOW))
    assert (r.code, r.id) == ("bad_request", "req-1")
    assert "not_after" in r.message


def test_a_not_after_far_ahead_is_refused_as_bad_request() -> None:
    # The agent remembers an id until its not_after: an unbounded one would pin it for ever.
    far = (NOW + timedelta(minutes=10, seconds=1)).isoformat()
    r = rejected(decode_command(body(not_after=far), b"req-1", NOW))
    assert r.code == "bad_request" and "not_after" in r.message and r.id == "req-1"
    near = (NOW + timedelta(minutes=10)).isoformat()
    assert isinstance(decode_command(body(not_after=near), None, NOW), CommandRequest)


def test_naive_not_after_is_utc() -> None:
    naive_past = (NOW - timedelta(seconds=5)).replace(tzinfo=None).isoformat()
    assert rejected(decode_command(body(not_after=naive_past), None, NOW)).code == "expired"


# -- decode_set -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("word", "action"),
    [
        (b"ON", "start"),
        (b"on", "start"),
        (b"OFF", "shutdown"),
        (b"Off", "shutdown"),
        (b"start", "start"),
        (b"START", "start"),
        (b"shutdown", "shutdown"),
        (b"destroy", "destroy"),
        (b"reboot", "reboot"),
        (b"Reset", "reset"),
        (b"suspend", "suspend"),
        (b"resume", "resume"),
        (b" reboot\n", "reboot"),
    ],
)
def test_set_words(word: bytes, action: str) -> None:
    req = decode_set(word, U, "set-1", NOW)
    assert isinstance(req, CommandRequest)
    assert (req.action, req.vm, req.id, req.by) == (action, U, "set-1", "mqtt-set")
    assert req.ts == NOW
    assert req.params.timeout_s == 60.0
    # A `set` has no deadline of its own: its action may begin within 30 s, never later.
    assert req.not_after == NOW + timedelta(seconds=30)


@pytest.mark.parametrize(
    "word", [b"", b"toggle", b"ON OFF", b"1", b"x" * 100, b'{"action":"start"}']
)
def test_set_unknown_word(word: bytes) -> None:
    r = rejected(decode_set(word, U, "set-2", NOW))
    assert r.code == "unknown_action"
    assert (r.id, r.vm) == ("set-2", U)
    assert "ON, OFF" in r.message
    assert len(r.message) < 200  # a huge payload is not echoed back whole


def test_set_invalid_utf8() -> None:
    r = rejected(decode_set(b"\xffON", U, "set-3", NOW))
    assert r.code == "bad_request"
    assert (r.id, r.vm) == ("set-3", U)


# -- valid_response_topic -------------------------------------------------------------------
PREFIX = Topics().reply_prefix("kvm1")


def test_own_reply_subtree_is_valid() -> None:
    assert valid_response_topic("kvmsup/v1/kvm1/reply/gw-1", PREFIX)
    assert valid_response_topic(Topics().reply("kvm1", "gw_2"), PREFIX)


@pytest.mark.parametrize(
    "topic",
    [
        None,
        "",
        "kvmsup/v1/kvm1/reply/",
        "kvmsup/v1/kvm2/reply/gw-1",
        "kvmsup/v1/kvm1/reply/gw-1/deeper",
        "kvmsup/v1/kvm1/reply/+",
        "kvmsup/v1/kvm1/reply/#",
        "kvmsup/v1/kvm1/reply/gw+",
        "kvmsup/v1/kvm1/status",
        "kvmsup/v1/kvm1/vm/" + U + "/state",
        "kvmsup/v1/kvm1/replyx/gw",
        "other/v1/kvm1/reply/gw-1",
        "kvmsup/v1/kvm1/reply/GW",
    ],
)
def test_other_response_topics_refused(topic: str | None) -> None:
    assert not valid_response_topic(topic, PREFIX)


def test_response_topic_with_newline_is_refused() -> None:
    assert not valid_response_topic("kvmsup/v1/kvm1/reply/gw\n", "kvmsup/v1/kvm1/reply/")
