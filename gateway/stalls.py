"""Stalls of the gevent worker's event loop, seen by the process itself.

Every REST request and websocket of the gateway is a greenlet on one OS thread: code that runs
without yielding holds every user behind it. gevent's monitor thread (a real thread) checks
every `THRESHOLD_S` whether the loop switched greenlets since its last look, and reports when it
did not, with the blocking greenlet's stack. A report opens a stall, dated from the loop's last
heartbeat (a timer every half look), and the loop itself ends it, by running a callback the
monitor queued, as soon as it is free again: counted in a
histogram of durations (`kvmsup_gateway_loop_stall_seconds` in `/metrics`) and logged once,
with its stack, at a bounded rate. Outside gevent (Werkzeug in development) nothing runs
and the histogram stays empty.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

THRESHOLD_S = 0.02  # a stall is counted from here: a user notices a slower answer
BUCKETS = (0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf)
LOG_EVERY_S = 10.0
STACK_LINES = 40  # of the report's lines, in the log


@dataclass(frozen=True)
class StallFigures:
    """Stalls since start: cumulative counts per upper bound (Prometheus' `le`), total time."""

    buckets: tuple[tuple[float, int], ...] = tuple((b, 0) for b in BUCKETS)
    count: int = 0
    seconds: float = 0.0


class StallMonitor:
    """Thread-safe: reports come on gevent's monitor thread, the end of a stall on the loop's
    own thread (the first thing it runs again), figures are read by `/metrics`."""

    def __init__(
        self,
        threshold_s: float = THRESHOLD_S,
        now: Callable[[], float] = time.monotonic,
        log_every_s: float = LOG_EVERY_S,
    ) -> None:
        self.threshold_s = threshold_s
        self._now = now
        self._log_every_s = log_every_s
        self._lock = threading.Lock()
        self._counts = [0] * len(BUCKETS)
        self._seconds = 0.0
        self._began: float | None = None  # the open stall's start
        self._ended_at = -math.inf
        self._last_beat = -math.inf
        self._next_log = 0.0
        self._silenced = 0
        self.heartbeat: Any = None  # the loop's timer watcher, once installed

    def blocked(self, report: Sequence[str]) -> bool:
        """gevent found the loop blocked since its last look. True when this opens a stall:
        the caller then asks the loop to call `ended` as soon as it runs again."""
        now = self._now()
        with self._lock:
            if self._began is not None:
                return False  # the same stall, still going
            if now - self._ended_at < self.threshold_s:
                # A look the monitor thread began before the loop ran the stall's end: the
                # same stall, reported late.
                return False
            # The loop's last heartbeat is when it last ran (to half a look); without one,
            # the look before this report found it switching: at most two looks ago.
            beat = self._last_beat
            self._began = beat if now - beat < 1.0 else now - 2 * self.threshold_s
            log, silenced = now >= self._next_log, self._silenced
            if log:
                self._next_log, self._silenced = now + self._log_every_s, 0
            else:
                self._silenced += 1
        if log:
            more = f" ({silenced} more since the last line)" if silenced else ""
            logger.warning(
                "the event loop is blocked (over %.0f ms)%s:\n%s",
                self.threshold_s * 1000,
                more,
                "\n".join(list(report)[:STACK_LINES]),
            )
        return True

    def beat(self) -> None:
        """On the loop's thread, every half look while it is free: when it last ran."""
        self._last_beat = self._now()  # one float, replaced whole: no lock

    def ended(self) -> None:
        """On the loop's thread, the first thing it ran again: the open stall is over."""
        now = self._now()
        with self._lock:
            if self._began is None:
                return
            duration, self._began, self._ended_at = now - self._began, None, now
            self._seconds += duration
            self._counts[next(i for i, b in enumerate(BUCKETS) if duration <= b)] += 1

    def figures(self) -> StallFigures:
        """Every stall that has ended, as cumulative counts per upper bound."""
        with self._lock:
            cumulative, total = [], 0
            for bound, n in zip(BUCKETS, self._counts, strict=True):
                total += n
                cumulative.append((bound, total))
            return StallFigures(tuple(cumulative), total, self._seconds)


MONITOR = StallMonitor()  # the process's own: gevent has one loop per process here


def install(monitor: StallMonitor = MONITOR) -> bool:
    """Start gevent's monitor thread on this process's loop, reporting to `monitor`; on the
    loop's own thread, once the process is patched (gunicorn's worker). False outside gevent."""
    from gateway.blocking import under_gevent

    if not under_gevent():
        return False
    import gevent
    from gevent import config, events

    config.monitor_thread = True
    config.max_blocking_time = monitor.threshold_s
    if hasattr(config, "print_blocking_reports"):  # gevent 25.4.1 and later
        config.print_blocking_reports = False  # the monitor logs, rate-limited

    hub = gevent.get_hub()

    def on_event(event: Any) -> None:  # on the monitor thread
        if isinstance(event, events.EventLoopBlocked) and monitor.blocked(event.info):
            # Run by the loop once whatever blocks it lets go: the stall's exact end.
            hub.loop.run_callback_threadsafe(monitor.ended)

    events.subscribers.append(on_event)
    # A timer watcher runs in the hub itself (no greenlet switch): the stall's start, to half
    # a look, at the cost of a few dozen callbacks a second.
    heartbeat = hub.loop.timer(0.0, monitor.threshold_s / 2)
    heartbeat.start(monitor.beat)
    monitor.heartbeat = heartbeat  # kept alive with the monitor
    hub.start_periodic_monitoring_thread()
    logger.info("event-loop stall monitor on: blocks over %.0f ms", monitor.threshold_s * 1000)
    return True
