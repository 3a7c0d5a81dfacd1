"""The ingest's inbox: states before metrics, superseded and over-bound batches shed and told
(unit); a consumer waiting on another thread wakes for a message and for close (service)."""

from __future__ import annotations

import threading
from itertools import pairwise

import pytest

from gateway.adapters.inbox import Inbox, Queued, Raw

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


# -- unit (no I/O): order, shedding, bounds --------------------------------------------------------


@pytest.mark.unit
def test_states_go_first_and_a_batch_superseded_by_its_host_is_shed() -> None:
    shed: list[tuple[Raw, str]] = []
    inbox = Inbox(on_shed=lambda item, why: shed.append((item, why)))
    a1, b1, a2 = raw("p/a/metrics"), raw("p/b/metrics"), raw("p/a/metrics", 11)
    state = raw("p/a/vm/u/state")
    for item in (a1, b1, a2):
        inbox.put_metrics(item)
    # a2 came while a1 still waited: a1 is shed, a2 waits in its place (host a first).
    assert [item for item, _ in shed] == [a1] and "newer batch" in shed[0][1]
    assert inbox.put(state)
    assert inbox.queued() == Queued(metrics_batches=2, metrics_bytes=21, other=1)
    assert inbox.get() is state
    assert inbox.get() is a2
    assert inbox.get() is b1
    assert inbox.queued() == Queued(0, 0, 0)
    inbox.close()
    assert inbox.get() is None


@pytest.mark.unit
def test_behind_every_host_gets_its_turn_with_its_newest_batch() -> None:
    """Hosts send faster than the ingest applies: each round serves every host once, with
    its latest batch, instead of chasing the newest arrivals."""
    inbox = Inbox()
    served: list[str] = []
    for tick in range(30):
        for host in "abcde":
            inbox.put_metrics(raw(f"p/{host}/metrics", tick + 1))
        # The ingest manages two batches per tick of five hosts.
        for _ in range(2):
            item = inbox.get()
            assert item is not None
            served.append(item[0].split("/")[1] + str(len(item[1]) - 1))
    # Always the host's newest batch: that of the tick being sent.
    assert [int(s[1:]) for s in served] == [i // 2 for i in range(len(served))]
    # No host left behind: a host waits in its place, so it is served again within a round.
    for host in "abcde":
        turns = [i for i, s in enumerate(served) if s[0] == host]
        assert len(turns) >= 10
        assert max(b - a for a, b in pairwise(turns)) <= 2 * 5


@pytest.mark.unit
def test_past_the_byte_bound_the_oldest_batches_go_never_the_newest() -> None:
    shed: list[Raw] = []
    inbox = Inbox(metrics_max_bytes=250, on_shed=lambda item, _why: shed.append(item))
    batches = [raw(f"p/h{i}/metrics", 100) for i in range(4)]
    for item in batches:
        inbox.put_metrics(item)
    assert shed == batches[:2] and inbox.queued().metrics_bytes == 200  # the first hosts go
    inbox.put_metrics(big := raw("p/big/metrics", 1000))
    assert inbox.get() is big  # alone over the bound, yet kept: it is the newest there is


@pytest.mark.unit
def test_other_messages_are_refused_past_their_bound_never_shed() -> None:
    inbox = Inbox(other_max=2)
    assert inbox.put(raw("p/a/status")) and inbox.put(raw("p/b/status"))
    assert not inbox.put(raw("p/c/status"))
    inbox.put_metrics(raw("p/a/metrics"))
    assert inbox.queued().other == 2
