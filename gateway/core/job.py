"""One job: its record, and the pure rules about it (deadlines, what blocks it, which reply
is its own, which of its ends are guesses)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.messages import (
    FINAL_STATUSES,
    PARAMS_OF,
    SNAPSHOT_ACTIONS,
    ActionParams,
    CommandReply,
    VmEvent,
    iso_z,
    utc_now,
)

# The agent never begins a command after its `not_after` (now + accept_timeout at publish),
# by its own clock: the gateway waits this much longer before it says the agent did not take
# it, for the clocks' skew and the `accepted` reply's way back.
CLOCK_MARGIN_S = 2.0
# Jobs a restarted gateway finds unfinished get at least this long for the replies and events
# the broker kept for it (its persistent session) before a deadline can end them.
RESTART_GRACE_S = 15.0
# The agent bounds each libvirt call it makes for a command (30 s). The gateway gives up on a
# final reply only once the agent can no longer act: a graceful stop makes up to four calls
# (read, shutdown, destroy on escalation, read) around its `timeout_s` wait; any other action
# one read-and-act attempt. Each budget adds one call's worth of margin on top.
AGENT_CALL_S = 30.0
FINAL_MARGIN_S = 5 * AGENT_CALL_S
DEFAULT_FINAL_S = 2 * AGENT_CALL_S
# Forced actions may run while a graceful one waits on the guest: a guest that ignores ACPI
# holds a shutdown for up to `timeout_s`, and "force" is how a user says "stop waiting". The
# agent runs both; the graceful job then ends on its own (the VM is stopped, or rebooted).
FORCED = frozenset({"destroy", "reset"})
GRACEFUL = frozenset({"shutdown", "reboot"})


def iso_or_none(ts: datetime | None) -> str | None:
    return iso_z(ts) if ts else None


@dataclass
class Job:
    id: str
    host: str
    vm: str
    name: str
    action: str
    params: dict[str, Any]
    by: str
    status: str = "pending"
    state: str | None = None
    changed: bool | None = None
    escalated: bool | None = None
    error: dict[str, str] | None = None
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)
    accepted_at: datetime | None = None
    finished_at: datetime | None = None
    deadline: float = 0.0  # monotonic time after which a missing final reply times out
    accept_deadline: float = 0.0  # monotonic time after which a missing `accepted` times out
    # The gateway's own guess ({status, error, at}) that the agent's real outcome replaced.
    revised: dict[str, Any] | None = None
    watched: bool = False  # a request thread waits on it (and times out its acceptance)
    # Sent by another gateway (or Home Assistant): known here only from its outcome on the
    # host's `events` stream, never from replies of ours.
    foreign: bool = False

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "vm": self.vm,
            "name": self.name,
            "action": self.action,
            "params": self.params,
            "by": self.by,
            "status": self.status,
            "finished": self.finished,
            "state": self.state,
            "changed": self.changed,
            "escalated": self.escalated,
            "error": self.error,
            "created_at": iso_or_none(self.created_at),
            "updated_at": iso_or_none(self.updated_at),
            "accepted_at": iso_or_none(self.accepted_at),
            "finished_at": iso_or_none(self.finished_at),
            "revised": self.revised,
            "foreign": self.foreign,
        }


def new_job(
    host: str, vm: str, name: str, action: str, params: ActionParams, by: str, now: datetime
) -> Job:
    """A job this gateway is about to send, made at `now`."""
    return Job(
        id=uuid.uuid4().hex,
        host=host,
        vm=vm,
        name=name,
        action=action,
        params=params.model_dump(),
        by=by,
        created_at=now,
        updated_at=now,
        # Its request thread times out its acceptance (JobManager.run): the janitor must not,
        # even while the job is still being persisted and not yet published.
        watched=True,
    )


# Ends the gateway guessed without a word from the agent: the command may still have reached
# it (paho delivers a publish whose wait timed out later), so a reply that comes after all is
# what happened and replaces the guess, in the job and in the audit.
UNHEARD_CODES = frozenset({"agent_timeout", "broker_unreachable", "no_final_reply", "host_offline"})


def unheard(job: Job) -> bool:
    return job.error is not None and job.error.get("code") in UNHEARD_CODES


def mismatch(job: Job, reply: CommandReply) -> str | None:
    if reply.host != job.host:
        return f"came from host {reply.host!r}, not {job.host!r}"
    if reply.vm is not None and reply.vm != job.vm:
        return f"names VM {reply.vm!r}, not {job.vm!r}"
    if reply.action is not None and reply.action != job.action:
        return f"names action {reply.action!r}, not {job.action!r}"
    return None


def blocking_job(action: str, in_flight: list[Job]) -> Job | None:
    """The unfinished job on a VM that keeps `action` from being sent now, if any: one job at
    a time per VM, except that a forced action preempts graceful ones."""
    for other in in_flight:
        if not (action in FORCED and other.action in GRACEFUL):
            return other
    return None


def final_budget(action: str, params: ActionParams) -> float:
    if action == "shutdown" or action in SNAPSHOT_ACTIONS:
        # A snapshot, once begun, has its own `timeout_s` at the agent (a guest's memory is
        # written out); a shutdown waits that long for the guest.
        return params.timeout_s + FINAL_MARGIN_S
    return DEFAULT_FINAL_S


def params_of(action: str, params: dict[str, Any]) -> ActionParams:
    """A job's params as its action's model (ValueError when they do not fit it)."""
    model = PARAMS_OF.get(action)
    if model is None:
        raise ValueError(f"unknown action {action!r}")
    return model.model_validate(params)  # type: ignore[return-value]


# The agent runs a plain command from a VM's `set` topic (Home Assistant's) as a job with this
# `by` and an id of its own beginning `set-` (a gateway's ids are bare hex): no gateway sent it.
PLAIN_COMMAND_BY = "mqtt-set"


def from_set(job: Job) -> bool:
    return job.foreign and job.by == PLAIN_COMMAND_BY and job.id.startswith("set-")


def foreign_job(event: VmEvent) -> Job:
    """The record of a command another gateway (or Home Assistant, through `set`) sent, from
    its final outcome on the host's `events` stream: that is all of it this gateway ever sees,
    so it begins finished, and what the event does not carry (params) stays empty."""
    return Job(
        id=str(event.id),
        host=event.host,
        vm=event.uuid or "",
        name=event.name or "",
        action=event.action or event.event,
        params={},
        by=event.by or "",
        status=str(event.status),
        state=event.state,
        error=event.error.model_dump() if event.error else None,
        created_at=event.ts,
        updated_at=event.ts,
        finished_at=event.ts,
        foreign=True,
    )


def outcome_reply(event: VmEvent) -> CommandReply:
    """A command outcome on the host's `events`, as the final reply it stands for."""
    return CommandReply(
        id=event.id,
        host=event.host,
        status=event.status,
        action=event.action,
        vm=event.uuid,
        state=event.state,
        error=event.error,
        ts=event.ts,
    )
