"""A gateway JobManager wired to a stand-in agent that replies on timers, as the MQTT ingest
thread would deliver the replies (shared by the unit and service job tests)."""

from __future__ import annotations

import threading

from gateway.core.job import Job
from gateway.core.jobs import JobManager
from shared.messages import CommandParams, CommandReply, CommandRequest

U = "a0000000-0000-4000-8000-000000000001"


class FakeAgent:
    """Answers requests on a timer, the way the MQTT ingest thread would deliver replies."""

    def __init__(self, statuses: list[tuple[float, str]]) -> None:
        self.statuses = statuses
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
            threading.Timer(delay, self.jobs.on_reply, args=(reply,)).start()


def manager(statuses: list[tuple[float, str]], accept: float = 0.5) -> tuple[JobManager, FakeAgent]:
    agent = FakeAgent(statuses)
    jobs = JobManager(agent.send, accept_timeout=accept)
    agent.jobs = jobs
    return jobs, agent


def submit(jobs: JobManager, action: str = "shutdown") -> Job:
    return jobs.submit("h1", U, "web", action, CommandParams(), "bob")
