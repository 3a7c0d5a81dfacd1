"""A gateway JobManager wired to a stand-in agent that replies on timers, as the MQTT ingest
thread would deliver the replies, or on a fake clock's time (shared by the unit and service job
tests)."""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import count

from gateway.core.job import Job
from gateway.core.jobs import Clock, JobManager
from shared.messages import CommandParams, CommandReply, CommandRequest, utc_now

U = "a0000000-0000-4000-8000-000000000001"


class FakeClock(Clock):
    """Time that moves only when told: by `advance`, or by a wait, which jumps to the next
    callback due (a reply on its way) or else to its own timeout. Callbacks run on the thread
    that moves time, so a test on this clock starts no thread."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._start = start
        self._epoch = utc_now()
        self._due: list[tuple[float, int, Callable[[], object]]] = []
        self._order = count()

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self._epoch + timedelta(seconds=self.t - self._start)

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        heapq.heappush(self._due, (self.t + delay, next(self._order), fn))

    def advance(self, seconds: float) -> None:
        end = self.t + seconds
        while self._due and self._due[0][0] <= end:
            self._run_next()
        self.t = end

    def wait_for(
        self, cond: threading.Condition, predicate: Callable[[], bool], timeout: float
    ) -> bool:
        end = self.t + timeout
        while not predicate():
            if not self._due or self._due[0][0] > end:
                self.t = max(self.t, end)
                return predicate()
            self._run_next()
        return True

    def _run_next(self) -> None:
        when, _, fn = heapq.heappop(self._due)
        self.t = max(self.t, when)
        fn()


class FakeAgent:
    """Answers requests on a timer, the way the MQTT ingest thread would deliver replies."""

    def __init__(self, statuses: list[tuple[float, str]], clock: FakeClock | None = None) -> None:
        self.statuses = statuses
        self.clock = clock
        self.sent: list[CommandRequest] = []
        self.jobs: JobManager | None = None

    def send(self, host: str, request: CommandRequest, expiry: int) -> None:
        self.sent.append(request)
        for delay, status in self.statuses:
            reply = CommandReply(
                id=request.id,
                host=host,
                status=status,  # type: ignore[arg-type]
                state="stopped",
                changed=True,
            )
            assert self.jobs is not None
            if self.clock is not None:
                self.clock.call_later(delay, lambda r=reply, j=self.jobs: j.on_reply(r))
            else:
                threading.Timer(delay, self.jobs.on_reply, args=(reply,)).start()


def manager(
    statuses: list[tuple[float, str]], accept: float = 0.5, clock: FakeClock | None = None
) -> tuple[JobManager, FakeAgent]:
    """Replies on real timers, or on `clock`'s time when one is given."""
    agent = FakeAgent(statuses, clock)
    jobs = JobManager(agent.send, accept_timeout=accept, clock=clock)
    agent.jobs = jobs
    return jobs, agent


def submit(jobs: JobManager, action: str = "shutdown") -> Job:
    return jobs.submit("h1", U, "web", action, CommandParams(), "bob")
