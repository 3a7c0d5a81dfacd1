"""The stall monitor's arithmetic on fake time: reports of gevent's monitor thread open a stall,
the loop's own callback ends it; stalls are counted apart in their buckets; the log is bounded."""

from __future__ import annotations

import logging

import pytest

from gateway.stalls import BUCKETS, StallMonitor

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_stall_opens_with_a_report_and_ends_when_the_loop_runs_again() -> None:
    clock = Clock()
    monitor = StallMonitor(threshold_s=0.02, now=clock)
    opened = []
    for _ in range(4):  # a 100 ms block: a report at each 20 ms look but the first
        clock.t += 0.02
        opened.append(monitor.blocked(["  File 'x.py', line 1, in spin"]))
    assert opened == [True, False, False, False]  # one stall, one end asked for
    assert monitor.figures().count == 0  # still going: not counted yet
    clock.t += 0.01
    monitor.ended()  # the loop ran its callback
    monitor.ended()  # a second call changes nothing
    figures = monitor.figures()
    assert figures.count == 1
    assert figures.seconds == pytest.approx(0.02 + 0.06 + 0.01 + 0.02)  # two looks before
    assert dict(figures.buckets)[0.1] == 0 and dict(figures.buckets)[0.25] == 1
    clock.t += 0.005
    assert not monitor.blocked(["a look begun before the end, reported after it"])
    clock.t += 0.02
    assert monitor.blocked(["a new block, a look later"])


def test_a_stall_is_dated_from_the_loops_last_heartbeat() -> None:
    clock = Clock()
    monitor = StallMonitor(threshold_s=0.02, now=clock)
    monitor.beat()  # the loop ran here, then blocked
    clock.t += 0.07  # gevent's monitor thread was late to look (a busy machine)
    assert monitor.blocked(["late"])
    clock.t += 0.03
    monitor.ended()
    assert monitor.figures().seconds == pytest.approx(0.1)
    clock.t += 5.0  # a heartbeat that old says nothing of the next stall: two looks it is
    assert monitor.blocked(["no heartbeat"])
    clock.t += 0.01
    monitor.ended()
    assert monitor.figures().seconds == pytest.approx(0.1 + 0.05)


def test_separate_stalls_are_counted_apart_in_their_buckets() -> None:
    clock = Clock()
    monitor = StallMonitor(threshold_s=0.02, now=clock)
    for length in (0.0, 0.01, 0.2, 3.0):
        assert monitor.blocked(["b"])
        clock.t += length
        monitor.ended()
        clock.t += 1.0
    figures = monitor.figures()
    assert figures.count == 4
    cumulative = dict(figures.buckets)
    assert [cumulative[b] for b in BUCKETS] == [0, 2, 2, 3, 3, 3, 3, 4]
    assert figures.seconds == pytest.approx(0.04 * 4 + 0.01 + 0.2 + 3.0)


def test_each_stall_is_logged_with_its_stack_at_most_once_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    monitor = StallMonitor(threshold_s=0.02, now=clock, log_every_s=10)
    with caplog.at_level(logging.WARNING, logger="gateway.stalls"):
        for i in range(5):
            monitor.blocked([f"  File 'app.py', line {i}, in render_fleet"])
            monitor.blocked(["the same stall: not logged again"])
            monitor.ended()
            clock.t += 1.0
        clock.t += 10
        monitor.blocked(["  File 'app.py', line 9, in scrape"])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "render_fleet" in lines[0] and "scrape" in lines[1]
    assert "4 more since the last line" in lines[1]
