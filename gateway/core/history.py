"""Metrics history in memory: each VM's current minute of ticks, packed, and the pure rules
that turn ticks into minute rows and any span of points into at most N averages and maxima."""

from __future__ import annotations

import math
import struct
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter

from shared.messages import MetricsBatch

# The figures kept per tick, in this order everywhere (packed points, table columns, API).
FIELDS = (
    "cpu_percent",
    "memory_percent",
    "memory_used_mb",
    "disk_read_bps",
    "disk_write_bps",
    "net_rx_bps",
    "net_tx_bps",
)
# Percentages and MiB fit a float32 exactly at the agent's two decimals (7 significant
# digits); byte rates do not (12,345,678.91 B/s), so they keep a double. The offset is the
# milliseconds of the tick's `ts` within its minute: the wire's own precision. Little-endian
# whatever the machine, and tick after tick, so two parts of one minute join by concatenation.
TICK = struct.Struct("<Hfffdddd")
# Most points one history answer may ask for (`?points=`); without it an answer holds at most
# an hour of ticks, a day of minutes or 30 days of quarters (1,800, 1,440, 2,880 by default).
MAX_POINTS = 10000
# A VM's history keeps at most one tick per half of its host's interval, and never more than
# one per MIN_TICK_SPACING_MS: a batch that lists a VM twice, a replayed batch, or a host that
# sends faster than the interval it states cannot grow the history beyond its tick rate.
MIN_TICK_SPACING_MS = 200
NAN = math.nan

Key = tuple[str, str]  # (host, uuid)
Tick = tuple[float, tuple[float | None, ...]]  # epoch seconds, figures in FIELDS order


class Minute:
    """One VM's ticks of one minute, packed as they arrive (46 bytes per tick)."""

    __slots__ = ("minute", "raw", "unwritten")

    def __init__(self, minute: int, raw: bytes | bytearray = b"", unwritten: bool = False) -> None:
        self.minute = minute
        self.raw = bytearray(raw)
        # A copy of a minute this process has not handed to the writer yet (`Tail.of`): a row
        # of the same minute in the file is then another part of it (written by the run
        # before a restart), to be merged, never one this copy already holds.
        self.unwritten = unwritten

    def copy(self, unwritten: bool = False) -> Minute:
        return Minute(self.minute, self.raw, unwritten)

    def __len__(self) -> int:
        return len(self.raw) // TICK.size

    def ticks(self) -> list[Tick]:
        """Each tick's time and figures (float32 ones back to the decimals sent)."""
        base = self.minute * 60.0
        out = [
            (base + off / 1000.0, (_short(cpu), _short(mem), _short(used), *rates))
            for off, cpu, mem, used, *rates in TICK.iter_unpack(self.raw)
        ]
        out.sort(key=itemgetter(0))  # a minute two gateway runs wrote in two parts
        return out

    def summary(self) -> Agg:
        """The minute as one point: averages over the ticks that had a figure, and maxima.
        Column by column (the writer does this for every VM once a minute)."""
        sums: list[float] = []
        counts: list[int] = []
        maxs: list[float | None] = []
        columns = list(zip(*TICK.iter_unpack(self.raw), strict=True))[1:] if self.raw else []
        for i, column in enumerate(columns):
            present = [v for v in column if v == v]  # NaN stands for null
            sums.append(sum(present))
            counts.append(len(present))
            peak = max(present) if present else None
            maxs.append(_short(peak) if i < 3 and peak is not None else peak)
        if not columns:
            sums, counts, maxs = [0.0] * 7, [0] * 7, [None] * 7
        return Agg(self.minute * 60.0, len(self), sums, counts, maxs)


def _short(value: float) -> float | None:
    """A float32 back to the figure that was sent (NaN stands for null). A float32 carries
    about 7 significant digits: percentages come back to 4 decimals, MiB whole."""
    return None if value != value else round(value, 4)


@dataclass
class Agg:
    """A point standing for `n` ticks from `t` (epoch seconds): per field the sum and count
    of the ticks that had a figure (null CPU on a first sample), and the maximum."""

    t: float
    n: int
    sums: list[float]
    counts: list[int]
    maxs: list[float | None]

    @classmethod
    def of(cls, t: float, values: list[float | None]) -> Agg:
        return cls(
            t,
            1,
            [v or 0.0 for v in values],
            [0 if v is None else 1 for v in values],
            list(values),
        )

    @classmethod
    def of_row(
        cls, t: float, n: int, avgs: Iterable[float | None], maxs: Iterable[float | None]
    ) -> Agg:
        avg = list(avgs)
        return cls(
            t,
            n,
            [0.0 if a is None else a * n for a in avg],
            [0 if a is None else n for a in avg],
            list(maxs),
        )

    def merge(self, other: Agg) -> None:
        if other.t < self.t:
            self.t = other.t
        self.n += other.n
        for i in range(7):
            self.sums[i] += other.sums[i]
            self.counts[i] += other.counts[i]
            x = other.maxs[i]
            if x is not None and (self.maxs[i] is None or x > self.maxs[i]):  # type: ignore[operator]
                self.maxs[i] = x

    def avgs(self) -> list[float | None]:
        return [s / c if c else None for s, c in zip(self.sums, self.counts, strict=True)]


def bucket(points: Iterable[Agg], width_s: float, origin: float = 0.0) -> list[Agg]:
    """Points merged per interval of `width_s` counted from `origin`, oldest first."""
    out: dict[int, Agg] = {}
    for p in points:
        i = int((p.t - origin) // width_s)
        have = out.get(i)
        if have is None:
            out[i] = Agg(p.t, p.n, list(p.sums), list(p.counts), list(p.maxs))
        else:
            have.merge(p)
    return [out[i] for i in sorted(out)]


def at_most(points: list[Agg], limit: int | None, since: float, until: float) -> list[Agg]:
    """`points` (oldest first, within [since, until]) as at most `limit` points: equal
    intervals over the window, each the average and maximum of the points inside it."""
    if limit is None or len(points) <= limit:
        return points
    width = max((until - since) / limit, 1e-3)
    merged = bucket(points, width, since)
    while len(merged) > limit:  # a point exactly at `until` opens one interval too many
        width *= 1.0 + 1.0 / limit
        merged = bucket(points, width, since)
    return merged


def ticks_at_most(ticks: list[Tick], limit: int, since: float, until: float) -> list[Agg]:
    """`at_most` for ticks, column by column rather than one `Agg` per tick (an hour of
    ticks is 1,800 of them)."""
    width = max((until - since) / limit, 1e-3)
    while True:
        groups: dict[int, list[Tick]] = {}
        for tick in ticks:
            groups.setdefault(int((tick[0] - since) // width), []).append(tick)
        if len(groups) <= limit:
            break
        width *= 1.0 + 1.0 / limit  # a tick exactly at `until` opens one interval too many
    return [_of_ticks(groups[i]) for i in sorted(groups)]


def _of_ticks(group: list[Tick]) -> Agg:
    sums: list[float] = []
    counts: list[int] = []
    maxs: list[float | None] = []
    for column in zip(*(values for _, values in group), strict=True):
        present = [v for v in column if v is not None]
        sums.append(sum(present))
        counts.append(len(present))
        maxs.append(max(present) if present else None)
    return Agg(group[0][0], len(group), sums, counts, maxs)


Closed = tuple[Key, Minute]


class Tail:
    """The minute each VM is in, plus the minutes closed but not yet committed: reads merge
    both with the file, so a point is visible from the moment it is ingested."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Key, Minute] = {}
        self._latest: dict[Key, int] = {}  # each VM's last tick kept (ms)
        self._pending: dict[Key, list[Minute]] = {}

    def add(self, batch: MetricsBatch, now: float) -> list[Closed]:
        """Append every VM's tick; return the minutes this batch ended (a VM's tick in a
        new minute ends its previous one). A tick is timed by the agent, but never after
        `now` (a clock ahead, or a forged time, would open minutes nothing closes). Runs on
        the ingest thread: no I/O, a few microseconds a VM."""
        closed: list[Closed] = []
        host = batch.host
        pack = TICK.pack
        last_ts, ms = None, 0
        now_ms = round(now * 1000)
        spacing = max(MIN_TICK_SPACING_MS, round(batch.interval_s * 500))
        with self._lock:
            opened = self._open
            latest = self._latest
            for m in batch.vms:
                if m.ts != last_ts:  # a batch's VMs usually share their tick's time
                    last_ts = m.ts
                    ms = min(round(m.ts.timestamp() * 1000), now_ms)
                key = (m.host or host, m.uuid)
                if ms < latest.get(key, -spacing) + spacing:
                    continue
                latest[key] = ms
                rd = wr = rx = tx = 0.0
                for disk in m.disk_io:
                    rd += disk.read_bps or 0.0
                    wr += disk.write_bps or 0.0
                for nic in m.network_io:
                    rx += nic.rx_bps or 0.0
                    tx += nic.tx_bps or 0.0
                cpu, mem, used = m.cpu_percent, m.memory_percent, m.memory_used_mb
                minute = ms // 60000
                buf = opened.get(key)
                if buf is None or buf.minute != minute:
                    if buf is not None:
                        closed.append((key, buf))
                        self._pending.setdefault(key, []).append(buf)
                    buf = opened[key] = Minute(minute)
                buf.raw += pack(
                    ms - minute * 60000,
                    NAN if cpu is None else cpu,
                    NAN if mem is None else mem,
                    NAN if used is None else used,
                    rd,
                    wr,
                    rx,
                    tx,
                )
        return closed

    def sweep(self, before_minute: int) -> list[Closed]:
        """End the minutes of VMs that went quiet (host offline, VM undefined): every open
        minute older than `before_minute`. Their keys leave memory."""
        with self._lock:
            old = [(k, m) for k, m in self._open.items() if m.minute < before_minute]
            for key, buf in old:
                del self._open[key]
                self._latest.pop(key, None)
                self._pending.setdefault(key, []).append(buf)
        return old

    def close_all(self) -> list[Closed]:
        return self.sweep(sys.maxsize)

    def forget(self, closed: list[Closed]) -> None:
        """`closed` is committed (or dropped): it no longer needs memory."""
        with self._lock:
            for key, buf in closed:
                pending = self._pending.get(key)
                if pending is None:
                    continue
                pending[:] = [p for p in pending if p is not buf]
                if not pending:
                    del self._pending[key]

    def of(self, key: Key) -> list[Minute]:
        """Copies of one VM's uncommitted minutes, oldest first; the open one `unwritten`."""
        with self._lock:
            mins = [m.copy() for m in self._pending.get(key, ())]
            buf = self._open.get(key)
            if buf is not None:
                mins.append(buf.copy(unwritten=True))
        return mins

    def counts(self) -> tuple[int, int]:
        """(open minutes, pending minutes)."""
        with self._lock:
            return len(self._open), sum(len(p) for p in self._pending.values())
