"""Messages the gateway drops: counted by reason, logged at a bounded rate; and metrics
batches applied late."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

logger = logging.getLogger(__name__)

# Why a message (or a nested entry, or a reply) was dropped: the label of the counter.
REASONS = (
    "bad_topic",  # not a topic of ours, or its bytes are not UTF-8
    "retained",  # retained on a topic agents never retain (metrics, events, replies)
    "too_large",  # over `max_message_bytes`: never parsed
    "not_json",  # does not parse (bad JSON, invalid UTF-8, too deep, NaN or Infinity)
    "bad_schema",  # parses, but is not the model the topic carries
    "out_of_range",  # a number or text past its bound (1e999, a 400-digit count, a huge id)
    "identity",  # names another host, VM, gateway or job than its topic (SPEC §7)
    "too_many_vms",  # a new VM of a host already at KVMSUP_MAX_VMS_PER_HOST
    "unknown_vm",  # about a VM the gateway holds no state for
    "unknown_host",  # metrics of a host the gateway holds no status for
    "unknown_job",  # a reply for no job this gateway run knows
    "inbox_full",  # the ingest thread is behind on states, statuses, events or replies
    "ingest_behind",  # a metrics batch shed unapplied: the ingest thread is behind
    "handler_error",  # a bug: logged with its traceback
    "store_full",  # metrics history or an event the database writer had no room for
)

# One line per reason per window: a flood of junk must not become a flood of log lines.
LOG_EVERY_S = 10.0


class Drops:
    """Thread-safe (paho's network thread and the ingest thread both count)."""

    def __init__(self, log_every_s: float = LOG_EVERY_S) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._log_every_s = log_every_s
        self._next_log: dict[str, float] = {}
        self._silenced: Counter[str] = Counter()
        self._late: Counter[str] = Counter()
        self._next_late_log = 0.0

    def drop(
        self, reason: str, topic: str, detail: str, payload: bytes = b"", count: int = 1
    ) -> None:
        """Count `count` drops (entries of one batch: one call); log unless this reason
        already logged within the window."""
        now = time.monotonic()
        with self._lock:
            self._counts[reason] += count
            if now < self._next_log.get(reason, 0.0):
                self._silenced[reason] += count
                return
            self._next_log[reason] = now + self._log_every_s
            silenced = self._silenced.pop(reason, 0)
        more = f" ({silenced} more dropped for this reason, not logged)" if silenced else ""
        # %r of a bytes slice: the first 256 bytes, escaped, whatever they hold.
        logger.warning(
            "dropped a message on %r (%s): %s; payload %r%s",
            topic[:256],
            reason,
            detail,
            payload[:256],
            more,
        )

    def late(self, topic: str, vm_metrics: int, age_s: float, interval_s: float) -> None:
        """A metrics batch applied more than two intervals after it was taken: still applied
        (it is the newest of its host), counted, logged at a bounded rate."""
        now = time.monotonic()
        with self._lock:
            self._late["batches"] += 1
            self._late["vm_metrics"] += vm_metrics
            if now < self._next_late_log:
                return
            self._next_late_log = now + self._log_every_s
        logger.warning(
            "the ingest is behind: a metrics batch on %r applied %.1f s after it was taken "
            "(interval %g s); further late batches are counted, not logged for %g s",
            topic[:256],
            age_s,
            interval_s,
            self._log_every_s,
        )

    def late_counts(self) -> dict[str, int]:
        """Metrics batches, and the VM metrics in them, applied late since start."""
        with self._lock:
            return {"batches": self._late["batches"], "vm_metrics": self._late["vm_metrics"]}

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def by_reason(self) -> dict[str, int]:
        """Every reason, zeros included, so a dashboard sees each series from the start."""
        counts = self.counts()
        return {reason: counts.get(reason, 0) for reason in REASONS}
