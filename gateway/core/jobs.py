"""Commands as jobs: one MQTT v5 request each, tracked through `accepted` to a final status."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NoReturn

from gateway.core.deadlines import (
    Clock,
    Janitor,
    overdue,
    set_admission_deadlines,
    set_restored_deadlines,
    unaccepted,
)
from gateway.core.ingest import Drop
from gateway.core.job import (
    CLOCK_MARGIN_S,
    RESTART_GRACE_S,
    Job,
    foreign_job,
    mismatch,
    new_job,
    outcome_reply,
    unheard,
)
from gateway.core.jobtable import JobTable
from gateway.errors import AgentTimeout, BusError, Unavailable
from shared.messages import (
    FINAL_STATUSES,
    ActionParams,
    CommandReply,
    CommandRequest,
    ErrorInfo,
    VmEvent,
)

logger = logging.getLogger(__name__)

# Publishes a request without waiting; returns what waits for the broker's acknowledgement
# (None when there is nothing to wait for). Both raise on failure.
Sender = Callable[[str, CommandRequest, int], Callable[[], None] | None]
JobListener = Callable[["Job"], None]
Persist = Callable[["Job"], None]

# Re-exported: callers import the job's record and constants from here, with the manager.
__all__ = ["CLOCK_MARGIN_S", "RESTART_GRACE_S", "Clock", "Job", "JobManager"]


class JobManager:
    """Thread-safe; a request thread waits on a condition of its own job, which the ingest
    thread notifies when that job changes. Every deadline reads `clock` (real time unless a
    test gives another)."""

    def __init__(
        self,
        send: Sender,
        accept_timeout: float = 5.0,
        keep: int = 1000,
        persist: Persist | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._send = send
        self._persist = persist
        self.accept_timeout = accept_timeout
        self._clock = clock or Clock()
        self._table = JobTable(keep, self._clock.now)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # guards the table and every job in it
        # Job id -> the condition its request thread waits on (the same lock): an update wakes
        # only the waiters of that job, not every request in flight.
        self._waiters: dict[str, threading.Condition] = {}
        self._listeners: list[JobListener] = []
        self._janitor = Janitor(self.expire, self._clock)

    def listen(self, listener: JobListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self._janitor.start()

    def stop(self) -> None:
        self._janitor.stop()

    def _publish(self, job: Job) -> None:
        for listener in self._listeners:
            try:
                listener(job)
            except Exception:
                logger.exception("job listener failed")

    def _update(self, job: Job, status: str, **fields: Any) -> None:
        """Caller holds the condition."""
        self._table.update(job, status, **fields)
        self._wake(job)

    def _wake(self, job: Job) -> None:
        """Caller holds the condition: the request thread waiting on `job`, if any, looks again."""
        waiter = self._waiters.get(job.id)
        if waiter is not None:
            waiter.notify_all()

    def _end(self, job: Job, status: str, error: ErrorInfo) -> None:
        """Caller holds the condition: the gateway ends `job` itself, saying why."""
        self._update(job, status, error=error.model_dump())

    # -- submitting -------------------------------------------------------------------------
    def submit(
        self, host: str, vm: str, name: str, action: str, params: ActionParams, by: str
    ) -> Job:
        """Publish the request; Conflict when a job in flight on the VM blocks it."""
        job = self._admit(host, vm, name, action, params, by)
        request = CommandRequest(
            id=job.id,
            action=action,
            vm=vm,
            params=params,
            by=by,
            not_after=job.created_at + timedelta(seconds=self.accept_timeout),
        )
        self._persist_before_sending(job)
        if self._clock.now() >= request.not_after:
            # Persisting took the whole acceptance window (SQLite busy): the agent would refuse
            # the request as expired, so it is not sent at all.
            self._refuse_as_store_slow(job)
        self._send_request(job, request)
        return job

    def _admit(
        self, host: str, vm: str, name: str, action: str, params: ActionParams, by: str
    ) -> Job:
        """The new job, in the table as `pending` with its deadlines; Conflict when a job in
        flight on the VM blocks it."""
        job = new_job(host, vm, name, action, params, by, self._clock.now())
        with self._cond:
            self._table.admit(job)
            set_admission_deadlines(job, self._clock.monotonic(), self.accept_timeout, params)
        return job

    def _persist_before_sending(self, job: Job) -> None:
        """On disk before the agent can act on it; a job that cannot be recorded is forgotten
        and never sent (Unavailable, `store_unavailable`)."""
        if self._persist is None:
            return
        try:
            self._persist(job)
        except Exception as exc:
            with self._cond:
                self._table.discard(job)
            logger.error("job %s not sent: %s", job.id, exc)
            raise Unavailable(
                "the gateway cannot record the command", code="store_unavailable"
            ) from exc

    def _refuse_as_store_slow(self, job: Job) -> NoReturn:
        """The job ends `rejected` (`store_slow`), unsent: the listeners hear it, the client
        gets it with the Unavailable."""
        with self._cond:
            self._end(
                job,
                "rejected",
                ErrorInfo(
                    code="store_slow",
                    message="recording the job took longer than the command may wait "
                    f"({self.accept_timeout:g} s); it was not sent",
                ),
            )
        self._publish(job)
        raise Unavailable(
            "the gateway recorded the command too slowly to send it",
            code="store_slow",
            job=self.snapshot(job),
        )

    def _send_request(self, job: Job, request: CommandRequest) -> None:
        """Publish the request and wait for the broker to take it; a failure leaves the job
        `failed` (`broker_unreachable`) and raises BusError carrying it."""
        try:
            # The request leaves before the listeners (audit, Socket.IO) hear of `pending`:
            # under gevent their work would otherwise run ahead of paho's write. They still
            # hear it first: a reply must take this lock before it can change the job.
            with self._cond:
                try:
                    confirm = self._send(job.host, request, math.ceil(self.accept_timeout))
                finally:
                    self._publish(job)
            if confirm is not None:
                confirm()
        except Exception as exc:
            with self._cond:
                self._end(job, "failed", ErrorInfo(code="broker_unreachable", message=str(exc)))
            self._publish(job)
            # The job is kept (and audited) as failed; the client gets it with the BusError.
            raise BusError(
                str(exc) or "the broker did not take the command", job=self.snapshot(job)
            ) from exc

    def run(self, job: Job, wait_s: float) -> bool:
        """Wait for `accepted` (AgentTimeout when none comes), then up to `wait_s` in all for
        the final status. True when the job finished in time."""
        start = self._clock.monotonic()
        with self._cond:
            # One request thread runs a job: the one that submitted it.
            waiter = self._waiters[job.id] = threading.Condition(self._lock)
            try:
                timed_out = self._wait(job, waiter, start, wait_s)
            finally:
                del self._waiters[job.id]
            finished = job.finished
        if timed_out:
            self._publish(job)
            raise AgentTimeout(
                job.error["message"] if job.error else "no answer", job=job.to_dict()
            )
        return finished

    def _wait(self, job: Job, waiter: threading.Condition, start: float, wait_s: float) -> bool:
        """Caller holds the lock. True when the job timed out waiting for `accepted`."""
        clock = self._clock
        accept_left = max(0.0, job.accept_deadline - start)
        clock.wait_for(waiter, lambda: job.status != "pending", accept_left)
        if job.status == "pending":
            self._end(job, "timed_out", unaccepted(job, self.accept_timeout))
            return True
        left = max(0.0, wait_s - (clock.monotonic() - start))
        clock.wait_for(waiter, lambda: job.finished, left)
        return False

    # -- replies and host changes (ingest thread) ---------------------------------------------
    def on_reply(self, reply: CommandReply) -> Drop | None:
        """Apply a reply to its job; a Drop when no job of ours is its own. A reply counts
        only from the host the job was sent to, about the job's VM and action: the reply
        topic's host is checked against the payload before this, the job against both here."""
        with self._cond:
            job = self._table.jobs.get(reply.id or "")
            if job is None:
                return Drop("unknown_job", f"no job {str(reply.id)[:64]!r}")
            wrong = mismatch(job, reply)
            if wrong:
                return Drop("identity", f"a reply for job {job.id} {wrong}")
            if job.finished and not unheard(job):
                return None  # a duplicate (QoS 1), or a reply after the real end
            if not self._table.apply_reply(job, reply):
                return None
            self._wake(job)
        self._publish(job)
        return None

    def on_event(self, event: VmEvent) -> Drop | None:
        """A command outcome on the host's `events` is the same fact as its final reply: it
        ends a job whose reply was lost (a gateway restart with no session left). An outcome
        of a job this gateway never sent (another gateway's, Home Assistant's) is recorded as
        a foreign job, so a client of any gateway sees every command."""
        if event.kind != "command" or not event.id or event.status not in FINAL_STATUSES:
            return None
        with self._cond:
            if event.id not in self._table.jobs:
                job = foreign_job(event)
                # Not counted: the Prometheus counters are this gateway's own commands.
                self._table.insert(job)
                self._table.trim()
                foreign = True
            else:
                foreign = False
        if foreign:
            self._publish(job)
            return None
        return self.on_reply(outcome_reply(event))

    def restore(self, jobs: list[Job]) -> None:
        """Jobs of an earlier run (newest first), from the store: unfinished ones get their
        deadlines back, counted from their creation, but never less than RESTART_GRACE_S.
        Every unfinished job is kept, however many; finished ones only up to `keep`."""
        wall, mono = self._clock.now(), self._clock.monotonic()
        with self._cond:
            for job in reversed(jobs):
                if job.id not in self._table.jobs:
                    if not job.finished:
                        age = (wall - job.created_at).total_seconds()
                        set_restored_deadlines(job, age, mono, self.accept_timeout)
                    self._table.insert(job)
            self._table.trim()
        unfinished = sum(1 for j in jobs if not j.finished)
        logger.info("restored %d job(s) of an earlier run, %d unfinished", len(jobs), unfinished)

    def host_offline(self, host: str) -> None:
        """Jobs in flight on a host whose agent went away will never get their reply."""
        changed: list[Job] = []
        with self._cond:
            for job in self._table.in_flight(host):
                self._end(
                    job,
                    "failed",
                    ErrorInfo(
                        code="host_offline",
                        message=f"host {host} went offline before the command finished",
                    ),
                )
                changed.append(job)
        for job in changed:
            self._publish(job)

    def expire(self, now: float) -> list[Job]:
        """End the jobs overdue at `now` (monotonic); the janitor calls this once a second."""
        expired: list[Job] = []
        with self._cond:
            for job in self._table.in_flight():
                error = overdue(job, now)
                if error is not None:
                    self._end(job, "timed_out", error)
                    expired.append(job)
        for job in expired:
            self._publish(job)
        return expired

    # -- reads --------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._table.jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._cond:
            return list(reversed(self._table.jobs.values()))

    def snapshot(self, job: Job) -> dict[str, Any]:
        with self._cond:
            return job.to_dict()

    def revision_counts(self) -> dict[tuple[str, str], int]:
        """Guesses of ours the agent's word replaced since start, by (guess, real status)."""
        with self._cond:
            return dict(self._table.revisions)

    def stats(self) -> tuple[dict[str, int], int]:
        """Jobs that entered each status since start, and jobs in flight now."""
        with self._cond:
            return dict(self._table.counts), self._table.in_flight_count()
