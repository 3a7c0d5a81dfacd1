"""What the command executor is built from: its tunables and its worker pools."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, TypeVar

from agent.hypervisor.callpool import CallPool, DaemonPool

T = TypeVar("T")

# A shutdown's escalation to destroy may begin up to this long after its wait for the guest
# ended (`timeout_s` after the shutdown was sent), and never later: the margin covers the
# scheduling of the waiting thread, not a slow libvirtd.
ESCALATE_GRACE_S = 5.0
# An id is remembered until this long after its `not_after`: a copy arriving later is refused
# as `expired` by the decoder anyway, so forgetting the id then can never run it twice.
REMEMBER_AFTER_S = 300.0
# Shutdowns waiting for their guests at once; one more is refused `busy` rather than queued
# behind minutes-long waits (it would then always end timed_out, nothing sent).
MAX_SHUTDOWNS = 64
# On agent stop, an action already sent has this long to be answered before the agent reports
# it outcome_unknown and lets the MQTT connection go.
STOP_GRACE_S = 2.0
# The most snapshots one VM may have (KVMSUP_SNAPSHOTS_MAX_PER_VM); one more is refused.
MAX_SNAPSHOTS_PER_VM = 20


@dataclass(frozen=True)
class ExecutorSettings:
    """`workers` call workers (and eight admitted commands each at most); a call's deadline;
    the id cache's size and how long past `not_after` an id is kept; the shutdown limits; the
    most snapshots a VM may have."""

    workers: int = 4
    call_timeout: float = 30.0
    history: int = 2048
    remember_after: float = REMEMBER_AFTER_S
    escalate_grace: float = ESCALATE_GRACE_S
    max_shutdowns: int = MAX_SHUTDOWNS
    max_snapshots: int = MAX_SNAPSHOTS_PER_VM

    @property
    def max_pending(self) -> int:
        return self.workers * 8


class Pool(Protocol):
    """What the executor asks of a pool of workers (`DaemonPool`, `CallPool`, a test's)."""

    def submit(self, fn: Callable[[], T]) -> Future[T]: ...

    def shutdown(self, wait: bool = False) -> None: ...


@dataclass
class Pools:
    """`calls`: libvirt calls that may begin an action; `jobs`: one thread per admitted command
    (keeping its deadline); `waits`: shutdowns waiting for their guests; `polls`: those waits'
    state reads."""

    calls: Pool
    jobs: Pool
    waits: Pool
    polls: Pool

    @classmethod
    def threads(cls, settings: ExecutorSettings) -> Pools:
        return cls(
            calls=CallPool(settings.workers),
            # A job never waits in a queue while its deadline runs. Daemon threads (see
            # DaemonPool): a stopping agent never waits for a job at exit.
            jobs=DaemonPool(settings.max_pending, "command"),
            # A shutdown may wait minutes for its guest: it waits on a pool of its own, one per
            # VM, so quick commands (destroy above all) are never queued behind it.
            waits=DaemonPool(settings.max_shutdowns, "shutdown"),
            # The waits' once-a-second state polls have workers of their own: a poll hung on a
            # stuck VM never holds a call worker a destroy needs.
            polls=CallPool(4),
        )

    def shutdown(self, wait: bool = False) -> None:
        for pool in (self.jobs, self.waits, self.calls, self.polls):
            pool.shutdown(wait=wait)
