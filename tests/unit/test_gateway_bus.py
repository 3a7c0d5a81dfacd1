"""Decoding MQTT messages into models, and the broker URL; no broker involved."""

from __future__ import annotations

import logging

import pytest

from gateway.bus import VmRemoved, decode
from shared.broker_url import parse_broker_url
from shared.messages import CommandReply, HostStatus, dump
from shared.topics import Topics

pytestmark = pytest.mark.unit

T = Topics("kvmsup")
U = "a0000000-0000-4000-8000-000000000001"


def test_decode_models_and_removals(caplog) -> None:
    status = decode(T, "gw", T.host_status("h1"), dump(HostStatus(host="h1", online=True)))
    assert isinstance(status, HostStatus) and status.online
    assert decode(T, "gw", T.vm_state("h1", U), b"") == VmRemoved("h1", U)
    assert decode(T, "gw", T.host_status("h1"), b"") is None
    with caplog.at_level(logging.WARNING):
        assert decode(T, "gw", T.vm_state("h1", U), b"{not json") is None
    assert "dropped invalid payload" in caplog.text


def test_decode_drops_foreign_identity_and_other_gateways_replies() -> None:
    lying = dump(HostStatus(host="h2", online=True))
    assert decode(T, "gw", T.host_status("h1"), lying) is None
    reply = dump(CommandReply(id="1", host="h1", status="accepted"))
    assert isinstance(decode(T, "gw", T.reply("h1", "gw"), reply), CommandReply)
    assert decode(T, "gw", T.reply("h1", "other"), reply) is None
    assert decode(T, "gw", "elsewhere/v1/h1/status", lying) is None


def test_mqtt_url() -> None:
    url = parse_broker_url("mqtts://gw%40x:s3cret@broker.lan")
    assert (url.host, url.port, url.tls, url.username, url.password) == (
        "broker.lan",
        8883,
        True,
        "gw@x",
        "s3cret",
    )
    assert "s3cret" not in repr(url)
    assert parse_broker_url("mqtt://127.0.0.1:1884").port == 1884
    with pytest.raises(ValueError):
        parse_broker_url("http://x")


def test_a_full_inbox_drops_with_an_error_and_never_blocks_paho(caplog) -> None:
    from types import SimpleNamespace

    from gateway.bus import INBOX_SIZE, Bus
    from gateway.config import Settings

    settings = Settings(mqtt_url="mqtt://127.0.0.1:9", gateway_id="gw")
    assert Bus(settings, lambda _m: None)._inbox.maxsize == INBOX_SIZE > 0
    bus = Bus(settings, lambda _m: None, inbox_size=3)  # not started: nothing drains it
    msg = SimpleNamespace(topic=T.host_status("h1"), payload=b"{}")
    with caplog.at_level(logging.ERROR):
        for _ in range(5):
            bus._on_message(None, None, msg)  # type: ignore[arg-type]  # returns at once
    assert bus._inbox.qsize() == 3
    drops = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(drops) == 2 and T.host_status("h1") in drops[0].getMessage()
    bus.stop()  # with a full inbox and no ingest thread: must not hang either
