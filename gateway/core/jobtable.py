"""The job manager's table: jobs by id in the order they came, the unfinished ones by VM, how
a job's status moves, and the counts of the statuses jobs entered."""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from datetime import datetime
from itertools import islice
from typing import Any

from gateway.core.job import Job, blocking_job
from gateway.errors import Conflict
from shared.messages import CommandReply, iso_z, utc_now

logger = logging.getLogger(__name__)


class JobTable:
    """Not thread-safe: the job manager holds its lock around every call."""

    def __init__(self, keep: int, now: Callable[[], datetime] = utc_now) -> None:
        self._keep = keep
        self._now = now
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        # The unfinished jobs of each VM (host, uuid), in the order they came. Admission, the
        # janitor, a host going offline and the in-flight count look only here: the table
        # also keeps up to `keep` finished jobs, which no command should pay to scan.
        self.open: dict[tuple[str, str], dict[str, Job]] = {}
        # Jobs that entered each status since start (Prometheus counters: never decrease). A
        # job is counted under one final status only, its first: when the agent's reply
        # replaces a guess of ours, that is counted in `revisions`, by (guess, real status).
        self.counts: Counter[str] = Counter()
        self.revisions: Counter[tuple[str, str]] = Counter()

    def update(self, job: Job, status: str, **fields: Any) -> None:
        """Move `job` to `status`, setting `fields` too; counted, timestamped."""
        if job.finished:  # the agent's word replacing our guess
            self.revisions[(job.status, status)] += 1
        elif status != job.status:
            self.counts[status] += 1
        job.status = status
        job.updated_at = self._now()
        for name, value in fields.items():
            setattr(job, name, value)
        if job.finished and job.finished_at is None:
            job.finished_at = job.updated_at
        if job.finished:
            self._forget_open(job)

    def apply_reply(self, job: Job, reply: CommandReply) -> bool:
        """What a reply of the agent's own (checked) changes in `job`; False when nothing."""
        if reply.status == "accepted":
            if job.status == "pending":
                self.update(job, "accepted", accepted_at=self._now())
            elif job.accepted_at is None:
                # Given up on, yet the agent has it: note the fact, wait for its end.
                job.accepted_at = job.updated_at = self._now()
            else:
                return False
            return True
        if job.finished:  # a guess of ours: what the agent says replaces it
            job.revised = {"status": job.status, "error": job.error, "at": iso_z(self._now())}
            logger.warning(
                "job %s: the agent's %s replaces the gateway's %s (%s)",
                job.id,
                reply.status,
                job.status,
                job.error.get("code") if job.error else None,
            )
        self.update(
            job,
            reply.status,
            state=reply.state or job.state,
            changed=reply.changed,
            escalated=reply.escalated,
            error=reply.error.model_dump() if reply.error else None,
        )
        return True

    def admit(self, job: Job) -> None:
        """A new job in the table, `pending`; Conflict when a job in flight on its VM blocks it."""
        other = blocking_job(job.action, self.on_vm(job.host, job.vm))
        if other is not None:
            raise Conflict(
                f"job {other.id} ({other.action}) is still running on this VM",
                code="job_in_progress",
                job=other.id,
            )
        self.insert(job)
        self.counts["pending"] += 1
        self.trim()

    def insert(self, job: Job) -> None:
        self.jobs[job.id] = job
        if not job.finished:
            self.open.setdefault((job.host, job.vm), {})[job.id] = job

    def discard(self, job: Job) -> None:
        """Forget a job that was never sent."""
        self.jobs.pop(job.id, None)
        self._forget_open(job)

    def _forget_open(self, job: Job) -> None:
        key = (job.host, job.vm)
        on_vm = self.open.get(key)
        if on_vm is not None and on_vm.pop(job.id, None) is not None and not on_vm:
            del self.open[key]

    def on_vm(self, host: str, vm: str) -> list[Job]:
        """The unfinished jobs of one VM, oldest first."""
        return list(self.open.get((host, vm), {}).values())

    def in_flight(self, host: str | None = None) -> list[Job]:
        """The unfinished jobs (of `host`), oldest VM first."""
        return [
            job
            for (on_host, _vm), on_vm in self.open.items()
            if host is None or on_host == host
            for job in on_vm.values()
        ]

    def in_flight_count(self) -> int:
        return sum(len(on_vm) for on_vm in self.open.values())

    def trim(self) -> None:
        """Forget the oldest finished jobs beyond `keep`; never an unfinished one: its replies,
        its deadline and the conflicts it causes need it here, so the table may hold more than
        `keep` while that many jobs are in flight."""
        excess = len(self.jobs) - self._keep
        if excess <= 0:
            return
        # Oldest first, and only as far as needed: the table is in creation order, so the
        # first finished jobs are usually its first entries.
        old = list(islice((job_id for job_id, job in self.jobs.items() if job.finished), excess))
        for job_id in old:
            del self.jobs[job_id]
