"""Jobs: accepted → final, 504 without `accepted`, 202 when the end is late, conflicts."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.core.jobs import JobManager
from gateway.errors import Conflict
from shared.messages import CommandParams, CommandReply, CommandRequest
from tests.support.jobs import U, manager, submit

pytestmark = pytest.mark.service


def test_a_job_ends_with_the_final_reply() -> None:
    jobs, agent = manager([(0.01, "accepted"), (0.05, "succeeded")])
    job = submit(jobs)
    assert jobs.run(job, wait_s=2)
    assert (job.status, job.state, job.changed) == ("succeeded", "stopped", True)
    request = agent.sent[0]
    assert (request.id, request.by, request.vm) == (job.id, "bob", U)
    assert request.not_after is not None


def test_rejection_without_acceptance_is_final() -> None:
    jobs, _ = manager([(0.01, "rejected")])
    job = submit(jobs)
    assert jobs.run(job, wait_s=1) and job.status == "rejected"


def test_one_job_at_a_time_per_vm_and_offline_hosts_fail_jobs() -> None:
    jobs, _ = manager([(0.01, "accepted")])
    job = submit(jobs)
    jobs.run(job, wait_s=0)
    with pytest.raises(Conflict):
        submit(jobs, "start")
    jobs.host_offline("h1")
    assert job.status == "failed" and job.error and job.error["code"] == "host_offline"
    submit(jobs, "start")  # the VM is free again


@pytest.mark.parametrize(
    ("graceful", "forced"), [("shutdown", "destroy"), ("reboot", "reset"), ("shutdown", "reset")]
)
def test_a_forced_action_preempts_a_graceful_one_in_flight(graceful: str, forced: str) -> None:
    """A guest ignoring ACPI holds a shutdown for up to timeout_s: force must still go through
    (the agent runs it beside the shutdown, which then ends when the VM is stopped)."""
    jobs, agent = manager([(0.01, "accepted")])
    pending = submit(jobs, graceful)
    jobs.run(pending, wait_s=0)
    assert not pending.finished
    forced_job = submit(jobs, forced)
    assert [r.action for r in agent.sent] == [graceful, forced]
    assert not forced_job.finished and not pending.finished


def test_other_overlaps_stay_conflicts() -> None:
    jobs, _ = manager([(0.01, "accepted")])
    job = submit(jobs, "destroy")
    jobs.run(job, wait_s=0)
    for action in ("destroy", "reset", "shutdown", "start"):
        with pytest.raises(Conflict):
            submit(jobs, action)  # a forced action in flight is never preempted
    jobs.host_offline("h1")

    graceful = submit(jobs, "shutdown")
    jobs.run(graceful, wait_s=0)
    for action in ("start", "suspend", "shutdown", "reboot"):
        with pytest.raises(Conflict):
            submit(jobs, action)  # only force preempts
    submit(jobs, "destroy")
    with pytest.raises(Conflict) as exc:
        submit(jobs, "reset")  # one forced action at a time
    assert exc.value.code == "job_in_progress"


def test_a_command_event_ends_a_job_whose_reply_was_lost() -> None:
    from shared.messages import ErrorInfo, VmEvent

    jobs, _agent = manager([(0.01, "accepted")])
    job = submit(jobs)
    jobs.run(job, wait_s=0.1)

    def event(**kw: object) -> VmEvent:
        fields: dict[str, object] = {
            "host": "h1",
            "kind": "command",
            "event": "shutdown",
            "uuid": U,
            "id": job.id,
            "action": "shutdown",
            "status": "failed",
            "error": ErrorInfo(code="libvirt_error", message="no"),
            **kw,
        }
        return VmEvent.model_validate(fields)

    assert jobs.on_event(event(id="not-ours")) is None  # Home Assistant's: not counted
    assert jobs.on_event(event(status="accepted")) is None and job.status == "accepted"
    forged = jobs.on_event(event(host="h2"))
    assert forged is not None and forged.reason == "identity" and job.status == "accepted"
    assert jobs.on_event(event()) is None
    assert job.status == "failed" and job.error == {"code": "libvirt_error", "message": "no"}


def test_requests_in_flight_each_wait_for_their_own_job() -> None:
    # Twenty commands on twenty VMs at once, answered in reverse order, and one whose agent
    # never sends its end: each request returns with its own outcome, the silent one only
    # when its wait runs out (the others' replies do not end it).
    jobs = JobManager(lambda *a: None, accept_timeout=2)
    vms = [f"a0000000-0000-4000-8000-{i:012d}" for i in range(21)]
    submitted = [
        jobs.submit("h1", vm, f"vm{i}", "suspend", CommandParams(), "bob")
        for i, vm in enumerate(vms)
    ]
    results: dict[str, tuple[bool, float]] = {}

    def run(job) -> None:
        t0 = time.monotonic()
        results[job.id] = (jobs.run(job, wait_s=1.5), time.monotonic() - t0)

    threads = [threading.Thread(target=run, args=(job,)) for job in submitted]
    for thread in threads:
        thread.start()
    for job in submitted:
        jobs.on_reply(
            CommandReply(id=job.id, host="h1", status="accepted", vm=job.vm, action="suspend")
        )
    for i, job in reversed(list(enumerate(submitted[:-1]))):
        status = "succeeded" if i % 2 else "failed"
        jobs.on_reply(
            CommandReply(id=job.id, host="h1", status=status, vm=job.vm, action="suspend")
        )
    for thread in threads:
        thread.join(10)
    for i, job in enumerate(submitted[:-1]):
        assert results[job.id][0] and job.status == ("succeeded" if i % 2 else "failed")
    finished, waited = results[submitted[-1].id]
    assert not finished and submitted[-1].status == "accepted" and waited >= 1.4


def test_listeners_hear_pending_before_a_reply_that_comes_while_the_request_is_sent() -> None:
    """The request now leaves before the listeners hear `pending` (their work must not delay
    it); a reply racing in on the ingest thread must still reach them after `pending`, or the
    audit and a Socket.IO client would see `accepted` turn back into `pending`."""
    jobs: JobManager | None = None
    racers: list[threading.Thread] = []

    def send_and_reply_at_once(host: str, request: CommandRequest, expiry: int) -> None:
        reply = CommandReply(id=request.id, host=host, status="accepted")
        assert jobs is not None
        racer = threading.Thread(target=jobs.on_reply, args=(reply,))
        racer.start()
        racer.join(0.3)  # without the ordering it is done by now; with it, it waits for us
        racers.append(racer)

    jobs = JobManager(send_and_reply_at_once, accept_timeout=2)
    heard: list[str] = []
    jobs.listen(lambda j: heard.append(j.status))
    job = submit(jobs)
    racers[0].join(5)
    assert heard == ["pending", "accepted"] and job.status == "accepted"
