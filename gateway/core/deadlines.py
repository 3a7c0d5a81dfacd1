"""Time for jobs: the clock they read, their deadlines, and the janitor that ends overdue ones."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from gateway.core.job import (
    CLOCK_MARGIN_S,
    DEFAULT_FINAL_S,
    RESTART_GRACE_S,
    Job,
    final_budget,
    params_of,
)
from shared.messages import ActionParams, ErrorInfo, utc_now

logger = logging.getLogger(__name__)


class Clock:
    """Real time: monotonic seconds for deadlines, UTC for the timestamps a job carries, and
    waits on a condition. The job manager takes one, so tests can hand it time that moves only
    when they say."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return utc_now()

    def wait_for(
        self, cond: threading.Condition, predicate: Callable[[], bool], timeout: float
    ) -> bool:
        """Caller holds `cond`: wait until `predicate` holds or `timeout` seconds pass."""
        return cond.wait_for(predicate, timeout)


def set_admission_deadlines(
    job: Job, now: float, accept_timeout: float, params: ActionParams
) -> None:
    """A new job's deadlines, from `now` (monotonic): for `accepted`, then for its end."""
    job.accept_deadline = now + accept_timeout + CLOCK_MARGIN_S
    job.deadline = now + accept_timeout + final_budget(job.action, params)


def set_restored_deadlines(job: Job, age: float, now: float, accept_timeout: float) -> None:
    """An unfinished job of an earlier run, created `age` seconds ago, gets its deadlines back,
    counted from its creation but never less than RESTART_GRACE_S from `now` (monotonic)."""
    try:
        budget = final_budget(job.action, params_of(job.action, job.params))
    except ValueError:
        budget = DEFAULT_FINAL_S
    accept_left = accept_timeout + CLOCK_MARGIN_S - age
    final_left = accept_timeout + budget - age
    job.accept_deadline = now + max(accept_left, RESTART_GRACE_S)
    job.deadline = now + max(final_left, RESTART_GRACE_S)


def unaccepted(job: Job, accept_timeout: float) -> ErrorInfo:
    """Why a request thread gives up on a job the agent never accepted."""
    return ErrorInfo(
        code="agent_timeout",
        message=f"host {job.host} did not accept the command within "
        f"{accept_timeout + CLOCK_MARGIN_S:g} s",
    )


def overdue(job: Job, now: float) -> ErrorInfo | None:
    """Why the janitor ends an unfinished `job` at `now` (monotonic), if it does."""
    if job.status == "pending" and not job.watched and now > job.accept_deadline:
        # Restored from an earlier run, with no request thread to time it out.
        return ErrorInfo(
            code="agent_timeout", message=f"host {job.host} never accepted the command"
        )
    if job.status == "accepted" and now > job.deadline:
        return ErrorInfo(
            code="no_final_reply",
            message="the agent accepted the command but never reported its end",
        )
    return None


class Janitor:
    """A daemon thread that calls `expire(now)` every `period` seconds, now from `clock`."""

    def __init__(
        self, expire: Callable[[float], object], clock: Clock, period: float = 1.0
    ) -> None:
        self._expire = expire
        self._clock = clock
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobs-janitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self._expire(self._clock.monotonic())
            except Exception:
                logger.exception("job janitor failed")
