"""Admitted commands whose final reply is not out yet: the first path to answer one sends it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from agent.clock import SYSTEM_CLOCK, Clock
from agent.commands.deadlines import CommandDeadline
from agent.commands.outcomes import Progress
from agent.commands.replies import ReplyCache
from shared.messages import CommandReply, CommandRequest

logger = logging.getLogger(__name__)

Reply = Callable[[CommandReply], None]


@dataclass
class Job:
    request: CommandRequest
    send: Reply | None
    deadline: CommandDeadline
    progress: Progress = field(default_factory=Progress)
    # The first call (the state before, the action): started at admission, on a call worker.
    first: Future[None] | None = None
    # Set once the first call returned and its worker is done answering (or chose not to).
    settled: threading.Event = field(default_factory=threading.Event)


class OpenJobs:
    """Thread-safe. A job's call worker, its own thread and the agent's stop may each decide
    its end; `finish` sends the reply of the first and drops the others."""

    def __init__(
        self,
        replies: ReplyCache,
        on_outcome: Callable[[CommandRequest | None, CommandReply], None],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._replies = replies
        self._on_outcome = on_outcome
        self._clock = clock
        self._open: dict[str, Job] = {}
        self._closed = threading.Condition()

    def add(self, job: Job) -> None:
        with self._closed:
            self._open[job.request.id] = job

    def all(self) -> list[Job]:
        with self._closed:
            return list(self._open.values())

    def wait_until_empty(self, timeout: float) -> list[Job]:
        """Waits up to `timeout` for every open job to be answered; those still open."""
        with self._closed:
            self._clock.wait_for(self._closed, lambda: not self._open, max(0.0, timeout))
            return list(self._open.values())

    def finish(self, job: Job, reply: CommandReply) -> bool:
        """Sends a job's final reply unless another path already did (True when this one did)."""
        request = job.request
        with self._closed:
            if self._open.get(request.id) is not job:
                return False
            del self._open[request.id]
            self._closed.notify_all()
        if job.send is not None:
            self._replies.remember(request, reply)
        # On a job's thread an exception would vanish into its Future: say so here.
        try:
            if job.send is not None:
                job.send(reply)
        except Exception:
            logger.exception("command %s: final reply not sent", request.id)
        logger.info(  # after the reply: the log line is not on its way
            "command %s %s %s by %s: %s",
            request.id,
            request.action,
            request.vm,
            request.by,
            reply.status,
        )
        try:
            self._on_outcome(request, reply)
        except Exception:
            logger.exception("command %s: outcome not published", request.id)
        return True
