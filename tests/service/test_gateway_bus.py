"""The gateway's MQTT bus: the paho adapter's callbacks and the broker URL, no broker involved
(unit); stopping with work queued, what the ingest thread was given reaches the store (a thread
and an SQLite file: service)."""

from __future__ import annotations

import logging

import pytest

from shared.broker_url import parse_broker_url
from shared.topics import Topics

pytestmark = pytest.mark.service

T = Topics("kvmsup")


def test_stopping_applies_and_stores_everything_the_ingest_thread_was_given(tmp_path) -> None:
    from gateway.adapters.store import Store
    from gateway.config import Settings
    from gateway.service import Gateway
    from shared.messages import VmEvent, dump

    db = str(tmp_path / "gw.db")
    gw = Gateway(Settings(mqtt_url="mqtt://127.0.0.1:9", gateway_id="gw", db=db))
    gw.store.start()
    gw.bus._ingest.start()  # no broker: the messages paho would have handed over
    gw._started = True
    count = 2000
    for i in range(count):
        event = VmEvent(host="h1", kind="agent", event=f"e{i}")
        gw.bus._inbox.put((T.host_events("h1"), dump(event), False, None))
    gw.stop()
    assert len(Store(db, 1, 1).events(limit=count + 1)) == count


# -- unit (no I/O): the paho adapter's callbacks, the broker URL -----------------------------------


@pytest.mark.unit
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


@pytest.mark.unit
def test_a_full_inbox_drops_counts_and_never_blocks_paho(caplog) -> None:
    from types import SimpleNamespace

    from gateway.adapters.bus import INBOX_SIZE, Bus
    from gateway.config import Settings

    settings = Settings(mqtt_url="mqtt://127.0.0.1:9", gateway_id="gw")
    assert Bus(settings, lambda _m: None)._inbox.maxsize == INBOX_SIZE > 0
    bus = Bus(settings, lambda _m: None, inbox_size=3)  # not started: nothing drains it
    msg = SimpleNamespace(topic=T.host_status("h1"), payload=b"{}", retain=False)
    with caplog.at_level(logging.WARNING):
        for _ in range(50):
            bus._on_message(None, None, msg)  # type: ignore[arg-type]  # returns at once
    assert bus._inbox.qsize() == 3
    assert bus.drops.counts() == {"inbox_full": 47}
    lines = [r for r in caplog.records if "inbox_full" in r.getMessage()]
    assert len(lines) == 1 and T.host_status("h1") in lines[0].getMessage()  # not 47 lines
    bus.stop()  # with a full inbox and no ingest thread: must not hang either


class _BadTopic:
    """What paho hands over for a PUBLISH whose topic bytes are not UTF-8."""

    _topic = b"kvmsup/v1/\xff\xfe/status"
    payload = b"{}"
    retain = False

    @property
    def topic(self) -> str:
        return self._topic.decode("utf-8")


@pytest.mark.unit
def test_a_topic_that_is_not_utf8_is_counted_not_raised(caplog) -> None:
    from gateway.adapters.bus import Bus
    from gateway.config import Settings

    bus = Bus(Settings(mqtt_url="mqtt://127.0.0.1:9", gateway_id="gw"), lambda _m: None)
    with caplog.at_level(logging.WARNING):
        bus._client.on_message(None, None, _BadTopic())  # type: ignore[misc]
    assert bus.drops.counts() == {"bad_topic": 1} and bus._inbox.qsize() == 0
    assert "not UTF-8" in caplog.text
    bus.stop()


@pytest.mark.unit
def test_a_callback_that_raises_is_logged_with_its_traceback(caplog) -> None:
    from gateway.adapters.bus import Bus
    from gateway.config import Settings

    bus = Bus(Settings(mqtt_url="mqtt://127.0.0.1:9", gateway_id="gw"), lambda _m: None)
    with caplog.at_level(logging.ERROR):
        bus._client.on_message(None, None, object())  # type: ignore[misc]  # no .topic at all
    record = next(r for r in caplog.records if "callback _on_message failed" in r.getMessage())
    assert record.exc_info is not None
    bus.stop()
