"""Jobs another gateway (or Home Assistant) sent: recorded from their outcome on `events`."""

from __future__ import annotations

import pytest

from gateway.core.jobs import JobManager
from shared.messages import ErrorInfo, VmEvent

pytestmark = pytest.mark.unit

U = "a0000000-0000-4000-8000-000000000001"


def outcome(**kw: object) -> VmEvent:
    fields: dict[str, object] = {
        "host": "h1",
        "kind": "command",
        "event": "destroy",
        "uuid": U,
        "name": "web 1",
        "id": "job-of-gateway-a",
        "action": "destroy",
        "status": "succeeded",
        "state": "stopped",
        "by": "carol",
        **kw,
    }
    return VmEvent.model_validate(fields)


def never_sends(*_args: object) -> None:
    raise AssertionError("a foreign job is never sent")


def test_an_outcome_of_another_gateways_job_becomes_a_finished_foreign_job() -> None:
    jobs = JobManager(never_sends)
    heard: list[dict[str, object]] = []
    jobs.listen(lambda job: heard.append(jobs.snapshot(job)))

    assert jobs.on_event(outcome()) is None
    job = jobs.get("job-of-gateway-a")
    assert job is not None and job.foreign and job.finished
    body = job.to_dict()
    assert (body["host"], body["vm"], body["name"], body["action"], body["by"]) == (
        "h1",
        U,
        "web 1",
        "destroy",
        "carol",
    )
    assert (body["status"], body["state"], body["foreign"]) == ("succeeded", "stopped", True)
    assert body["finished_at"] is not None
    assert [h["status"] for h in heard] == ["succeeded"]  # one update, for audit and clients
    # The counters are this gateway's own commands; nothing is in flight here.
    assert jobs.stats() == ({}, 0)
    assert [j.id for j in jobs.all()] == ["job-of-gateway-a"]


def test_a_repeated_outcome_is_heard_once() -> None:
    jobs = JobManager(never_sends)
    heard: list[str] = []
    jobs.listen(lambda job: heard.append(job.status))
    jobs.on_event(outcome())
    assert jobs.on_event(outcome()) is None  # QoS 1 may deliver it twice
    assert heard == ["succeeded"]


def test_a_failed_foreign_job_keeps_its_error() -> None:
    jobs = JobManager(never_sends)
    jobs.on_event(
        outcome(status="failed", error=ErrorInfo(code="libvirt_error", message="no domain"))
    )
    job = jobs.get("job-of-gateway-a")
    assert job is not None and job.error == {"code": "libvirt_error", "message": "no domain"}


@pytest.mark.parametrize(
    "kw",
    [{"status": "accepted"}, {"id": None}, {"kind": "lifecycle", "status": None}],
    ids=["not-final", "no-id", "not-a-command"],
)
def test_events_that_are_no_command_outcome_make_no_job(kw: dict[str, object]) -> None:
    jobs = JobManager(never_sends)
    assert jobs.on_event(outcome(**kw)) is None
    assert jobs.all() == []


def test_foreign_jobs_are_forgotten_like_finished_ones() -> None:
    jobs = JobManager(never_sends, keep=10)
    for i in range(25):
        jobs.on_event(outcome(id=f"j{i}"))
    assert [j.id for j in jobs.all()] == [f"j{i}" for i in range(24, 14, -1)]


def test_only_a_plain_command_from_set_is_told_apart_from_another_gateways() -> None:
    from gateway.core.job import foreign_job, from_set

    assert from_set(foreign_job(outcome(id="set-1732950000000000000", by="mqtt-set")))
    assert not from_set(foreign_job(outcome()))  # another gateway's job
    # A token that happens to be named like the agent's marker does not make a job plain.
    assert not from_set(foreign_job(outcome(id="9cdfda4567d744c0ac2560da69ffc8a7", by="mqtt-set")))
