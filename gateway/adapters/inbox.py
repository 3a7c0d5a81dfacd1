"""What paho's thread hands the ingest loop: two bounded queues, metrics batches and the rest.

Metrics batches are QoS 0 and superseded by the next tick: when the ingest falls behind, a
batch whose host sent a newer one before it was applied is shed (and counted), as are the
longest-waiting past a byte bound, so the cache shows recent figures instead of an ever older
backlog. States,
statuses, replies and events are never shed in favour of metrics; they are served first, so a
VM's state precedes the batch that names it. Works under threads and under gevent's
monkey-patched `threading` alike (a Condition and two deques)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

# (topic, payload, retained, correlation data)
Raw = tuple[str, bytes, bool, bytes | None]

# Messages other than metrics waiting for the ingest loop; past this they are dropped
# (`inbox_full`): paho's thread must never wait, or the broker's keepalive would lapse.
OTHER_MAX = 10_000
# Payload bytes of queued metrics batches: about 2 s of a 10,000-VM fleet at 0.4 s ticks.
# Past it the oldest batches go (`ingest_behind`), whichever host they came from.
METRICS_MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Queued:
    """What waits now: the ingest's backlog, for /health and /metrics."""

    metrics_batches: int
    metrics_bytes: int
    other: int


class Inbox:
    """Many producers (paho's thread), one consumer (the ingest loop). `on_shed(item, why)` is
    told of each metrics batch shed, outside the lock.

    Metrics wait as the newest batch of each host, in the order the hosts first queued one: a
    batch arriving while its host's previous one still waits replaces it there. Behind, the
    ingest then goes round the hosts, each with its freshest figures; a plain queue shedding
    superseded batches would chase the newest arrivals and could skip the same hosts tick after
    tick."""

    def __init__(
        self,
        other_max: int = OTHER_MAX,
        metrics_max_bytes: int = METRICS_MAX_BYTES,
        on_shed: Callable[[Raw, str], None] | None = None,
    ) -> None:
        self.maxsize = other_max
        self.metrics_max_bytes = metrics_max_bytes
        self._on_shed = on_shed or (lambda _item, _why: None)
        self._cond = threading.Condition(threading.Lock())
        self._other: deque[Raw] = deque()
        self._metrics: OrderedDict[str, Raw] = OrderedDict()  # topic -> its newest batch
        self._metrics_bytes = 0
        self._closed = False

    def put(self, item: Raw) -> bool:
        """Queue a message other than a metrics batch; False when `maxsize` already wait."""
        with self._cond:
            if len(self._other) >= self.maxsize:
                return False
            self._other.append(item)
            self._cond.notify()
        return True

    def put_metrics(self, item: Raw) -> None:
        """Queue a metrics batch in place of its host's waiting one, if any; past the byte
        bound the longest-waiting hosts' batches go (never this one)."""
        shed: list[tuple[Raw, str]] = []
        topic = item[0]
        with self._cond:
            old = self._metrics.get(topic)
            if old is not None:
                self._metrics_bytes -= len(old[1])
                shed.append((old, "a newer batch of the same host came before it was applied"))
            self._metrics[topic] = item
            self._metrics_bytes += len(item[1])
            while self._metrics_bytes > self.metrics_max_bytes and len(self._metrics) > 1:
                _, first = self._metrics.popitem(last=False)
                self._metrics_bytes -= len(first[1])
                shed.append((first, f"over {self.metrics_max_bytes} bytes of batches waited"))
            self._cond.notify()
        for old_item, why in shed:
            self._on_shed(old_item, why)

    def close(self) -> None:
        """Once what is queued now has been got, `get` returns None (the loop ends)."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Raw | None:
        """The next message, the others before metrics; None once closed and empty. Raises
        TimeoutError when nothing came within `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._other:
                    return self._other.popleft()
                if self._metrics:
                    _, item = self._metrics.popitem(last=False)
                    self._metrics_bytes -= len(item[1])
                    return item
                if self._closed:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                self._cond.wait(left)

    def qsize(self) -> int:
        return len(self._other) + len(self._metrics)

    def queued(self) -> Queued:
        with self._cond:
            return Queued(len(self._metrics), self._metrics_bytes, len(self._other))
