"""Commands as jobs: one MQTT v5 request each, tracked through `accepted` to a final status."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from datetime import timedelta
from itertools import islice
from typing import Any, NoReturn

from gateway.core.ingest import Drop
from gateway.core.job import (
    CLOCK_MARGIN_S,
    DEFAULT_FINAL_S,
    GATEWAY_FINAL,
    RESTART_GRACE_S,
    Job,
    blocking_job,
    final_budget,
    foreign_job,
    mismatch,
    unheard,
)
from gateway.errors import AgentTimeout, BusError, Conflict, Unavailable
from shared.messages import (
    FINAL_STATUSES,
    CommandParams,
    CommandReply,
    CommandRequest,
    ErrorInfo,
    VmEvent,
    iso_z,
    utc_now,
)

logger = logging.getLogger(__name__)

# Publishes a request without waiting; returns what waits for the broker's acknowledgement
# (None when there is nothing to wait for). Both raise on failure.
Sender = Callable[[str, CommandRequest, int], Callable[[], None] | None]
JobListener = Callable[["Job"], None]
Persist = Callable[["Job"], None]

# Re-exported: callers import the job's record and constants from here, with the manager.
__all__ = [
    "CLOCK_MARGIN_S",
    "GATEWAY_FINAL",
    "RESTART_GRACE_S",
    "Job",
    "JobManager",
    "blocking_job",
    "final_budget",
]


class JobManager:
    """Thread-safe; a request thread waits on a condition of its own job, which the ingest
    thread notifies when that job changes."""

    def __init__(
        self,
        send: Sender,
        accept_timeout: float = 5.0,
        keep: int = 1000,
        persist: Persist | None = None,
    ) -> None:
        self._send = send
        self._persist = persist
        self.accept_timeout = accept_timeout
        self._keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        # The unfinished jobs of each VM (host, uuid), in the order they came. Admission, the
        # janitor, a host going offline and the in-flight count look only here: the table
        # also keeps up to `keep` finished jobs, and scanning those on every command was a
        # tenth of a millisecond of each command's round trip at the default 1,000.
        self._open: dict[tuple[str, str], dict[str, Job]] = {}
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # guards the table and every job in it
        # Job id -> the condition its request thread waits on (the same lock): an update wakes
        # only the waiters of that job, not every request in flight.
        self._waiters: dict[str, threading.Condition] = {}
        self._listeners: list[JobListener] = []
        # Jobs that entered each status since start (Prometheus counters: never decrease). A
        # job is counted under one final status only, its first: when the agent's reply
        # replaces a guess of ours, that is counted in `revisions`, by (guess, real status).
        self.counts: Counter[str] = Counter()
        self.revisions: Counter[tuple[str, str]] = Counter()
        self._stop = threading.Event()
        self._janitor = threading.Thread(
            target=self._janitor_loop, name="jobs-janitor", daemon=True
        )

    def listen(self, listener: JobListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self._janitor.start()

    def stop(self) -> None:
        self._stop.set()

    def _publish(self, job: Job) -> None:
        for listener in self._listeners:
            try:
                listener(job)
            except Exception:
                logger.exception("job listener failed")

    def _update(self, job: Job, status: str, **fields: Any) -> None:
        """Caller holds the condition."""
        if job.finished:  # the agent's word replacing our guess
            self.revisions[(job.status, status)] += 1
        elif status != job.status:
            self.counts[status] += 1
        job.status = status
        job.updated_at = utc_now()
        for name, value in fields.items():
            setattr(job, name, value)
        if job.finished and job.finished_at is None:
            job.finished_at = job.updated_at
        if job.finished:
            self._forget_open(job)
        waiter = self._waiters.get(job.id)
        if waiter is not None:
            waiter.notify_all()

    def _insert(self, job: Job) -> None:
        """Caller holds the condition."""
        self._jobs[job.id] = job
        if not job.finished:
            self._open.setdefault((job.host, job.vm), {})[job.id] = job

    def _forget_open(self, job: Job) -> None:
        """Caller holds the condition: the job finished, or was dropped unsent."""
        key = (job.host, job.vm)
        on_vm = self._open.get(key)
        if on_vm is not None and on_vm.pop(job.id, None) is not None and not on_vm:
            del self._open[key]

    def _in_flight(self, host: str | None = None) -> list[Job]:
        """Caller holds the condition. The unfinished jobs (of `host`), oldest VM first."""
        return [
            job
            for (on_host, _vm), on_vm in self._open.items()
            if host is None or on_host == host
            for job in on_vm.values()
        ]

    def _trim(self) -> None:
        """Caller holds the condition. Forget the oldest finished jobs beyond `keep`; never an
        unfinished one: its replies, its deadline and the conflicts it causes need it here,
        so the table may hold more than `keep` while that many jobs are in flight."""
        excess = len(self._jobs) - self._keep
        if excess <= 0:
            return
        # Oldest first, and only as far as needed: the table is in creation order, so the
        # first finished jobs are usually its first entries.
        old = list(islice((job_id for job_id, job in self._jobs.items() if job.finished), excess))
        for job_id in old:
            del self._jobs[job_id]

    # -- submitting -------------------------------------------------------------------------
    def submit(
        self, host: str, vm: str, name: str, action: str, params: CommandParams, by: str
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
        if utc_now() >= request.not_after:
            # Persisting took the whole acceptance window (SQLite busy): the agent would refuse
            # the request as expired, so it is not sent at all.
            self._refuse_as_store_slow(job)
        self._send_request(job, request)
        return job

    def _admit(
        self, host: str, vm: str, name: str, action: str, params: CommandParams, by: str
    ) -> Job:
        """The new job, in the table as `pending` with its deadlines; Conflict when a job in
        flight on the VM blocks it."""
        job = Job(
            id=uuid.uuid4().hex,
            host=host,
            vm=vm,
            name=name,
            action=action,
            params=params.model_dump(),
            by=by,
            # Its request thread times out its acceptance (run()): the janitor must not, even
            # while the job is still being persisted and not yet published.
            watched=True,
        )
        with self._cond:
            other = blocking_job(action, list(self._open.get((host, vm), {}).values()))
            if other is not None:
                raise Conflict(
                    f"job {other.id} ({other.action}) is still running on this VM",
                    code="job_in_progress",
                    job=other.id,
                )
            now = time.monotonic()
            job.accept_deadline = now + self.accept_timeout + CLOCK_MARGIN_S
            job.deadline = now + self.accept_timeout + final_budget(action, params)
            self._insert(job)
            self.counts["pending"] += 1
            self._trim()
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
                self._jobs.pop(job.id, None)
                self._forget_open(job)
            logger.error("job %s not sent: %s", job.id, exc)
            raise Unavailable(
                "the gateway cannot record the command", code="store_unavailable"
            ) from exc

    def _refuse_as_store_slow(self, job: Job) -> NoReturn:
        """The job ends `rejected` (`store_slow`), unsent: the listeners hear it, the client
        gets it with the Unavailable."""
        with self._cond:
            self._update(
                job,
                "rejected",
                error={
                    "code": "store_slow",
                    "message": "recording the job took longer than the command may wait "
                    f"({self.accept_timeout:g} s); it was not sent",
                },
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
                self._update(
                    job, "failed", error={"code": "broker_unreachable", "message": str(exc)}
                )
            self._publish(job)
            # The job is kept (and audited) as failed; the client gets it with the BusError.
            raise BusError(
                str(exc) or "the broker did not take the command", job=self.snapshot(job)
            ) from exc

    def run(self, job: Job, wait_s: float) -> bool:
        """Wait for `accepted` (AgentTimeout when none comes), then up to `wait_s` in all for
        the final status. True when the job finished in time."""
        start = time.monotonic()
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
        waiter.wait_for(lambda: job.status != "pending", max(0.0, job.accept_deadline - start))
        if job.status == "pending":
            self._update(
                job,
                "timed_out",
                error={
                    "code": "agent_timeout",
                    "message": f"host {job.host} did not accept the command within "
                    f"{self.accept_timeout + CLOCK_MARGIN_S:g} s",
                },
            )
            return True
        left = max(0.0, wait_s - (time.monotonic() - start))
        waiter.wait_for(lambda: job.finished, left)
        return False

    # -- replies and host changes (ingest thread) ---------------------------------------------
    def on_reply(self, reply: CommandReply) -> Drop | None:
        """Apply a reply to its job; a Drop when no job of ours is its own. A reply counts
        only from the host the job was sent to, about the job's VM and action: the reply
        topic's host is checked against the payload before this, the job against both here."""
        with self._cond:
            job = self._jobs.get(reply.id or "")
            if job is None:
                return Drop("unknown_job", f"no job {str(reply.id)[:64]!r}")
            wrong = mismatch(job, reply)
            if wrong:
                return Drop("identity", f"a reply for job {job.id} {wrong}")
            if job.finished and not unheard(job):
                return None  # a duplicate (QoS 1), or a reply after the real end
            if reply.status == "accepted":
                if job.status == "pending":
                    self._update(job, "accepted", accepted_at=utc_now())
                elif job.accepted_at is None:
                    # Given up on, yet the agent has it: note the fact, wait for its end.
                    job.accepted_at = job.updated_at = utc_now()
                else:
                    return None
            else:
                if job.finished:  # a guess of ours: what the agent says replaces it
                    job.revised = {
                        "status": job.status,
                        "error": job.error,
                        "at": iso_z(utc_now()),
                    }
                    logger.warning(
                        "job %s: the agent's %s replaces the gateway's %s (%s)",
                        job.id,
                        reply.status,
                        job.status,
                        job.error.get("code") if job.error else None,
                    )
                err: ErrorInfo | None = reply.error
                self._update(
                    job,
                    reply.status,
                    state=reply.state or job.state,
                    changed=reply.changed,
                    escalated=reply.escalated,
                    error=err.model_dump() if err else None,
                )
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
            if event.id not in self._jobs:
                job = foreign_job(event)
                # Not counted: the Prometheus counters are this gateway's own commands.
                self._insert(job)
                self._trim()
                foreign = True
            else:
                foreign = False
        if foreign:
            self._publish(job)
            return None
        reply = CommandReply(
            id=event.id,
            host=event.host,
            status=event.status,
            action=event.action,
            vm=event.uuid,
            state=event.state,
            error=event.error,
            ts=event.ts,
        )
        return self.on_reply(reply)

    def restore(self, jobs: list[Job]) -> None:
        """Jobs of an earlier run (newest first), from the store: unfinished ones get their
        deadlines back, counted from their creation, but never less than RESTART_GRACE_S.
        Every unfinished job is kept, however many; finished ones only up to `keep`."""
        wall, mono = utc_now(), time.monotonic()
        with self._cond:
            for job in reversed(jobs):
                if job.id in self._jobs:
                    continue
                if not job.finished:
                    age = (wall - job.created_at).total_seconds()
                    try:
                        budget = final_budget(job.action, CommandParams.model_validate(job.params))
                    except ValueError:
                        budget = DEFAULT_FINAL_S
                    accept_left = self.accept_timeout + CLOCK_MARGIN_S - age
                    final_left = self.accept_timeout + budget - age
                    job.accept_deadline = mono + max(accept_left, RESTART_GRACE_S)
                    job.deadline = mono + max(final_left, RESTART_GRACE_S)
                self._insert(job)
            self._trim()
        unfinished = sum(1 for j in jobs if not j.finished)
        logger.info("restored %d job(s) of an earlier run, %d unfinished", len(jobs), unfinished)

    def host_offline(self, host: str) -> None:
        """Jobs in flight on a host whose agent went away will never get their reply."""
        changed: list[Job] = []
        with self._cond:
            for job in self._in_flight(host):
                self._update(
                    job,
                    "failed",
                    error={
                        "code": "host_offline",
                        "message": f"host {host} went offline before the command finished",
                    },
                )
                changed.append(job)
        for job in changed:
            self._publish(job)

    def _janitor_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.expire(time.monotonic())
            except Exception:
                logger.exception("job janitor failed")

    def expire(self, now: float) -> list[Job]:
        expired: list[Job] = []
        with self._cond:
            for job in self._in_flight():
                if job.status == "pending" and not job.watched and now > job.accept_deadline:
                    # Restored from an earlier run, with no request thread to time it out.
                    self._update(
                        job,
                        "timed_out",
                        error={
                            "code": "agent_timeout",
                            "message": f"host {job.host} never accepted the command",
                        },
                    )
                    expired.append(job)
                elif job.status == "accepted" and now > job.deadline:
                    self._update(
                        job,
                        "timed_out",
                        error={
                            "code": "no_final_reply",
                            "message": "the agent accepted the command but never reported its end",
                        },
                    )
                    expired.append(job)
        for job in expired:
            self._publish(job)
        return expired

    # -- reads --------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._cond:
            return list(reversed(self._jobs.values()))

    def snapshot(self, job: Job) -> dict[str, Any]:
        with self._cond:
            return job.to_dict()

    def revision_counts(self) -> dict[tuple[str, str], int]:
        """Guesses of ours the agent's word replaced since start, by (guess, real status)."""
        with self._cond:
            return dict(self.revisions)

    def stats(self) -> tuple[dict[str, int], int]:
        """Jobs that entered each status since start, and jobs in flight now."""
        with self._cond:
            return dict(self.counts), sum(len(on_vm) for on_vm in self._open.values())
