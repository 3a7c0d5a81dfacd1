"""Raw MQTT messages into models, or a drop with its reason; and the drop counter's log."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.core.drops import REASONS, Drops
from gateway.core.ingest import Drop, VmRemoved, decode
from shared.messages import CommandReply, GatewayStatus, HostStatus, VmState, dump
from shared.topics import Topics
from tests.support.vm_states import vm_state

pytestmark = pytest.mark.unit

T = Topics("kvmsup")
U = "a0000000-0000-4000-8000-000000000001"
U2 = "a0000000-0000-4000-8000-000000000002"


def state(host: str = "h1", uuid: str = U) -> bytes:
    return dump(vm_state(host, uuid, vcpus=1, memory_mb=512, max_memory_mb=512))


def reason(result: object) -> str:
    assert isinstance(result, Drop), result
    return result.reason


def test_models_and_removals() -> None:
    status = decode(T, "gw", T.host_status("h1"), dump(HostStatus(host="h1", online=True)))
    assert isinstance(status, HostStatus) and status.online
    assert isinstance(decode(T, "gw", T.vm_state("h1", U), state()), VmState)
    assert decode(T, "gw", T.vm_state("h1", U), b"") == VmRemoved("h1", U)
    assert reason(decode(T, "gw", T.host_status("h1"), b"")) == "bad_schema"


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"{not json", "not_json"),
        (b"\xff\xfe\x00garbage", "not_json"),
        (b"[" * 5000 + b"]" * 5000, "not_json"),
        (b'{"v": 1, "host": "h1", "online": NaN}', "not_json"),
        (b'{"v": 1, "host": "h1", "online": true, "node": {"cpus": Infinity}}', "not_json"),
        (b'{"v": 1, "host": "h1"}', "bad_schema"),
        (b'{"v": 2, "host": "h1", "online": true}', "bad_schema"),
        (b'"a string"', "bad_schema"),
        (b"[" + b" " * 2_000_000 + b"]", "too_large"),
    ],
)
def test_junk_is_dropped_with_its_reason(payload: bytes, why: str) -> None:
    assert reason(decode(T, "gw", T.host_status("h1"), payload)) == why


def test_a_name_holding_nan_is_still_a_name() -> None:
    body = json.loads(state())
    body["name"] = "NaN-Infinity box"
    model = decode(T, "gw", T.vm_state("h1", U), json.dumps(body).encode())
    assert isinstance(model, VmState) and model.name == "NaN-Infinity box"


def test_the_topic_is_the_authority_on_identity() -> None:
    lying = dump(HostStatus(host="h2", online=True))
    assert reason(decode(T, "gw", T.host_status("h1"), lying)) == "identity"
    assert reason(decode(T, "gw", T.vm_state("h1", U), state(host="h2"))) == "identity"
    assert reason(decode(T, "gw", T.vm_state("h1", U), state(uuid=U2))) == "identity"
    other = dump(GatewayStatus(gateway="gw-b", online=True))
    assert reason(decode(T, "gw", T.gateway_status("gw-a"), other)) == "identity"
    assert reason(decode(T, "gw", "elsewhere/v1/h1/status", lying)) == "bad_topic"


def test_a_reply_needs_our_topic_and_its_own_correlation_data() -> None:
    reply = dump(CommandReply(id="job-1", host="h1", status="accepted"))
    ok = decode(T, "gw", T.reply("h1", "gw"), reply, correlation=b"job-1")
    assert isinstance(ok, CommandReply)
    assert reason(decode(T, "gw", T.reply("h1", "other"), reply, correlation=b"job-1")) == (
        "bad_topic"
    )
    assert reason(decode(T, "gw", T.reply("h1", "gw"), reply, correlation=b"job-2")) == "identity"
    assert reason(decode(T, "gw", T.reply("h1", "gw"), reply)) == "identity"
    from_h2 = dump(CommandReply(id="job-1", host="h2", status="accepted"))
    assert reason(decode(T, "gw", T.reply("h1", "gw"), from_h2, correlation=b"job-1")) == (
        "identity"
    )


def test_retained_is_only_taken_where_agents_retain() -> None:
    status = dump(HostStatus(host="h1", online=True))
    assert isinstance(decode(T, "gw", T.host_status("h1"), status, retained=True), HostStatus)
    reply = dump(CommandReply(id="j", host="h1", status="succeeded"))
    stale = decode(T, "gw", T.reply("h1", "gw"), reply, retained=True, correlation=b"j")
    assert reason(stale) == "retained"
    assert reason(decode(T, "gw", T.host_events("h1"), b"{}", retained=True)) == "retained"


def test_drops_are_counted_every_time_and_logged_once_per_window(caplog) -> None:
    drops = Drops(log_every_s=3600)
    with caplog.at_level(logging.WARNING):
        for _ in range(1000):
            drops.drop("not_json", "kvmsup/v1/h1/status", "bad", b"\x00" * 1000)
        drops.drop("identity", "kvmsup/v1/h1/status", "names h2")
    assert drops.counts() == {"not_json": 1000, "identity": 1}
    assert len(caplog.records) == 2
    assert len(caplog.records[0].getMessage()) < 1500  # the payload is cut at 256 bytes
    assert set(drops.by_reason()) == set(REASONS)

    quick = Drops(log_every_s=0)
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        quick.drop("not_json", "t", "a")
        quick.drop("not_json", "t", "b")
    assert len(caplog.records) == 2
