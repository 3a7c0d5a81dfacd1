"""The gateway's bus stopping with work queued: what the ingest thread was given reaches the
store (a thread and an SQLite file: not a unit test)."""

from __future__ import annotations

import pytest

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
