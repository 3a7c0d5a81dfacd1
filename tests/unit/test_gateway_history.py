"""Metrics history in memory: each VM's minute packed as its ticks arrive, and `points=`
downsampling (the SQLite side is in tests/service/test_gateway_history_store.py)."""

from __future__ import annotations

import pytest

from gateway.core.history import Agg, Tail, at_most, ticks_at_most
from tests.support.history import HOST, T0, batch, uuid, vm

pytestmark = pytest.mark.unit


def test_the_tail_ends_a_minute_when_the_next_begins_and_packs_nulls() -> None:
    tail = Tail()
    assert tail.add(batch(T0, [vm(0, T0, None, 0)]), T0) == []
    assert tail.add(batch(T0 + 58, [vm(0, T0 + 58, 7.5, 1)]), T0 + 58) == []
    closed = tail.add(batch(T0 + 60, [vm(0, T0 + 60, 1.0, 2)]), T0 + 60)
    assert [(key, m.minute, len(m)) for key, m in closed] == [((HOST, uuid(0)), T0 // 60, 2)]
    summary = closed[0][1].summary()
    assert (summary.n, summary.avgs()[0], summary.maxs[0]) == (2, 7.5, 7.5)  # null not counted
    assert tail.counts() == (1, 1)
    tail.forget(closed)
    assert tail.counts() == (1, 0)
    assert [len(m) for m in tail.of((HOST, uuid(0)))] == [1]
    assert [m.minute for _, m in tail.sweep(T0 // 60 + 2)] == [T0 // 60 + 1]


def test_a_vm_keeps_one_tick_per_half_interval_and_none_from_the_future() -> None:
    """One host's credentials cannot grow the history beyond its tick rate: a VM listed twice
    in a batch, a replayed batch, batches faster than the stated interval (2 s here) each
    add nothing; a tick timed after its arrival is kept at its arrival time."""
    tail = Tail()
    tail.add(batch(T0, [vm(0, T0, 1.0, 0), vm(0, T0, 2.0, 0), vm(1, T0, 3.0, 0)]), T0)
    tail.add(batch(T0, [vm(0, T0, 4.0, 0)]), T0 + 0.1)  # replayed
    tail.add(batch(T0 + 0.5, [vm(0, T0 + 0.5, 5.0, 1)]), T0 + 0.5)  # faster than stated
    tail.add(batch(T0 + 2, [vm(0, T0 + 2, 6.0, 1)]), T0 + 2)  # the next real tick
    tail.add(batch(T0 + 2.2, [vm(0, T0 + 3600, 7.0, 2)]), T0 + 3)  # an hour ahead
    (minute,) = tail.of((HOST, uuid(0)))
    assert [(round(t - T0, 3), v[0]) for t, v in minute.ticks()] == [(0, 1.0), (2, 6.0), (3, 7.0)]
    assert len(tail.of((HOST, uuid(1)))[0]) == 1


def test_at_most_keeps_the_average_and_the_maximum_of_each_interval() -> None:
    points = [Agg.of(T0 + s, [float(s), None, 1.0, 0.0, 0.0, 0.0, 0.0]) for s in range(100)]
    merged = at_most(points, 7, T0, T0 + 99)
    assert len(merged) <= 7
    assert sum(p.n for p in merged) == 100
    assert merged[-1].maxs[0] == 99.0 and merged[0].avgs()[1] is None
    assert at_most(points, 100, T0, T0 + 99) is points
    assert len(at_most(points, 1, T0, T0 + 99)) == 1
    ticks = [(T0 + s, (float(s), None, 1.0, 0.0, 0.0, 0.0, 0.0)) for s in range(100)]
    same = ticks_at_most(ticks, 7, T0, T0 + 99)
    assert [(p.t, p.n, p.sums, p.counts, p.maxs) for p in same] == [
        (p.t, p.n, p.sums, p.counts, p.maxs) for p in merged
    ]
