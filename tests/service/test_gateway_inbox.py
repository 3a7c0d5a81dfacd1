"""The ingest's inbox: states before metrics, superseded and over-bound batches shed and told."""

from __future__ import annotations

import threading

import pytest

from gateway.adapters.inbox import Inbox, Raw

pytestmark = pytest.mark.service


def raw(topic: str, size: int = 10) -> Raw:
    return (topic, b"x" * size, False, None)


def test_a_waiting_consumer_wakes_for_a_message_and_for_close() -> None:
    inbox = Inbox()
    got: list[Raw | None] = []
    reader = threading.Thread(target=lambda: got.extend([inbox.get(), inbox.get()]))
    reader.start()
    inbox.put_metrics(item := raw("p/a/metrics"))
    inbox.close()
    reader.join(10)
    assert got == [item, None]
    with pytest.raises(TimeoutError):
        Inbox().get(timeout=0.01)
