"""`GET /metrics`: prometheus_client's exposition of the cache, parsed back by prometheus_client
and by a strict little parser of format 0.0.4."""

from __future__ import annotations

import threading

import pytest

from gateway.web.prometheus import SingleFlight
from tests.support.gateway import wait_until

pytestmark = pytest.mark.service


def test_concurrent_scrapes_share_one_make_and_sequential_ones_do_not() -> None:
    flights = SingleFlight()
    started, release = threading.Event(), threading.Event()
    made: list[int] = []

    def slow() -> bytes:
        made.append(1)
        started.set()
        assert release.wait(10)
        return b"first"

    results: list[bytes] = []
    leader = threading.Thread(target=lambda: results.append(flights.run("text", slow)))
    leader.start()
    assert started.wait(10)
    # Arrives while the first is being made: waits for it instead of making its own.
    follower = threading.Thread(target=lambda: results.append(flights.run("text", slow)))
    follower.start()
    wait_until(lambda: flights.waiting("text") == 1)
    # Another format is another scrape.
    assert flights.run("openmetrics", lambda: b"other") == b"other"
    release.set()
    leader.join(10)
    follower.join(10)
    assert results == [b"first", b"first"] and len(made) == 1
    # Once it is done, the next scrape makes a fresh body.
    assert flights.run("text", lambda: b"second") == b"second"


def test_a_failed_make_does_not_strand_the_scrapes_waiting_for_it() -> None:
    flights = SingleFlight()
    started, release = threading.Event(), threading.Event()

    def broken() -> bytes:
        started.set()
        assert release.wait(10)
        raise RuntimeError("boom")

    errors: list[Exception] = []

    def lead() -> None:
        try:
            flights.run("text", broken)
        except RuntimeError as exc:
            errors.append(exc)

    leader = threading.Thread(target=lead)
    leader.start()
    assert started.wait(10)
    got: list[bytes] = []
    follower = threading.Thread(target=lambda: got.append(flights.run("text", lambda: b"own")))
    follower.start()
    wait_until(lambda: flights.waiting("text") == 1)
    release.set()
    leader.join(10)
    follower.join(10)
    assert len(errors) == 1 and got == [b"own"]
