"""Jobs: accepted → final, 504 without `accepted`, 202 when the end is late, conflicts; the job
manager with an agent that never answers or is answered by hand (unit), and with an agent that
answers on timer threads (service)."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.core.jobs import CLOCK_MARGIN_S, JobManager
from gateway.errors import AgentTimeout, Conflict
from gateway.web.http_errors import status_of
from shared.messages import CommandParams, CommandReply, CommandRequest
from tests.support.jobs import FakeClock, U, manager, submit

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


# -- unit (no I/O): no answer, or answers by hand --------------------------------------------------


@pytest.mark.unit
def test_no_accepted_reply_is_an_agent_timeout() -> None:
    clock = FakeClock()
    jobs, agent = manager([], accept=0.2, clock=clock)
    job = submit(jobs)
    t0 = clock.monotonic()
    with pytest.raises(AgentTimeout) as exc:
        jobs.run(job, wait_s=10)
    # Not before the agent's own deadline (`not_after`) plus the margin for clocks and the way
    # back: until then, the agent may still take it.
    waited = clock.monotonic() - t0
    assert CLOCK_MARGIN_S + 0.2 - 0.05 <= waited < CLOCK_MARGIN_S + 2
    not_after = agent.sent[0].not_after
    assert not_after is not None and job.finished_at is not None
    assert (job.finished_at - not_after).total_seconds() >= CLOCK_MARGIN_S - 0.05
    assert status_of(exc.value) == 504 and job.status == "timed_out"


@pytest.mark.unit
def test_a_late_reply_corrects_a_job_failed_as_broker_unreachable() -> None:
    """wait_for_publish timed out (503), but paho delivered the command later and the agent
    ran it: its replies must make the job (and the audit, a listener) say what happened."""
    from gateway.errors import BusError

    def slow_broker(host: str, request: CommandRequest, expiry: int) -> None:
        raise BusError("the broker did not acknowledge the command in time")

    jobs = JobManager(slow_broker, accept_timeout=0.5)
    audited: list[tuple[str, str | None]] = []
    jobs.listen(lambda j: audited.append((j.status, j.error["code"] if j.error else None)))
    with pytest.raises(BusError) as exc:
        submit(jobs, "destroy")
    job = jobs.get(exc.value.extra["job"]["id"])
    assert job is not None and job.status == "failed"

    def reply(status: str) -> CommandReply:
        return CommandReply(id=job.id, host="h1", status=status, state="stopped", changed=True)  # type: ignore[arg-type]

    jobs.on_reply(reply("accepted"))
    jobs.on_reply(reply("succeeded"))
    assert (job.status, job.state, job.error) == ("succeeded", "stopped", None)
    assert audited[-1] == ("succeeded", None)
    jobs.on_reply(reply("failed"))  # a stray duplicate changes nothing now
    assert job.status == "succeeded"


@pytest.mark.unit
def test_a_reply_from_another_host_vm_or_action_finishes_nothing() -> None:
    jobs, _agent = manager([])
    job = submit(jobs)

    def reply(**kw: object) -> CommandReply:
        fields: dict[str, object] = {
            "id": job.id,
            "host": "h1",
            "status": "succeeded",
            "vm": U,
            "action": "shutdown",
            **kw,
        }
        return CommandReply.model_validate(fields)

    for forged in (reply(host="h2"), reply(vm=U[:-1] + "9"), reply(action="destroy")):
        drop = jobs.on_reply(forged)
        assert drop is not None and drop.reason == "identity"
        assert job.status == "pending"
    unknown = jobs.on_reply(reply(id="someone-else"))
    assert unknown is not None and unknown.reason == "unknown_job"
    assert jobs.on_reply(reply(status="accepted")) is None
    assert jobs.on_reply(reply()) is None and job.status == "succeeded"


@pytest.mark.unit
def test_restored_jobs_get_their_deadlines_back_with_a_grace() -> None:
    from datetime import timedelta

    from gateway.core.jobs import RESTART_GRACE_S, Job
    from shared.messages import utc_now

    old = utc_now() - timedelta(hours=1)
    pending = Job("p", "h1", U, "web", "start", {}, "bob", created_at=old)
    running = Job("r", "h1", U, "web", "shutdown", {"timeout_s": 600.0}, "bob", status="accepted")
    done = Job("d", "h1", U, "web", "start", {}, "bob", status="succeeded")
    clock = FakeClock()
    jobs = JobManager(lambda *a: None, accept_timeout=1, clock=clock)
    jobs.restore([running, pending, done])  # newest first, as the store lists them
    assert [j.id for j in jobs.all()] == ["r", "p", "d"]
    now = clock.monotonic()
    assert now + RESTART_GRACE_S - 1 < pending.accept_deadline <= now + RESTART_GRACE_S
    assert running.deadline > now + 600  # its own budget, counted from its creation
    assert jobs.expire(now + 1) == []  # the broker gets time to hand over what it kept
    expired = jobs.expire(now + RESTART_GRACE_S + 1)
    assert [j.id for j in expired] == ["p"] and pending.error is not None
    assert pending.error["code"] == "agent_timeout"  # a guess: a reply may still replace it


@pytest.mark.unit
def test_a_job_is_persisted_before_its_command_is_sent_and_not_sent_if_it_cannot_be() -> None:
    from gateway.errors import Unavailable

    persisted: list[str] = []
    sent: list[str] = []

    def send(host: str, request: CommandRequest, expiry: int) -> None:
        assert request.id in persisted  # on disk first: a kill -9 now loses nothing
        sent.append(request.id)

    jobs = JobManager(send, accept_timeout=0.5, persist=lambda j: persisted.append(j.id))
    job = submit(jobs)
    assert sent == [job.id]

    def broken(_job: object) -> None:
        raise OSError("disk full")

    jobs = JobManager(send, accept_timeout=0.5, persist=broken)
    with pytest.raises(Unavailable) as exc:
        submit(jobs)
    assert exc.value.code == "store_unavailable" and status_of(exc.value) == 503
    assert sent == [job.id] and jobs.all() == []


@pytest.mark.unit
def test_unfinished_jobs_are_never_evicted_finished_ones_go_first() -> None:
    jobs = JobManager(lambda *a: None, accept_timeout=0.5, keep=2)
    vms = [f"a0000000-0000-4000-8000-00000000000{i}" for i in range(4)]
    first, second, third = (
        jobs.submit("h1", vm, "web", "shutdown", CommandParams(), "bob") for vm in vms[:3]
    )
    # More jobs in flight than `keep`: every one is still tracked.
    assert {j.id for j in jobs.all()} == {first.id, second.id, third.id}
    reply = CommandReply(id=first.id, host="h1", status="accepted", action="shutdown", vm=vms[0])
    assert jobs.on_reply(reply) is None and first.status == "accepted"
    # It still blocks a conflicting command on its VM...
    with pytest.raises(Conflict):
        jobs.submit("h1", vms[0], "web", "reboot", CommandParams(), "bob")
    # ...and the janitor still ends it (the others are their request threads' to end).
    assert jobs.expire(first.deadline + 1) == [first]
    assert first.error is not None and first.error["code"] == "no_final_reply"
    # Now finished: the oldest finished job is the one a new job pushes out, and only it.
    fourth = jobs.submit("h1", vms[3], "web", "shutdown", CommandParams(), "bob")
    assert [j.id for j in jobs.all()] == [fourth.id, third.id, second.id]


@pytest.mark.unit
def test_restore_keeps_every_unfinished_job_beyond_the_limit() -> None:
    from gateway.core.jobs import Job

    old_running = Job("r", "h1", U, "web", "shutdown", {}, "bob", status="accepted")
    done = [Job(f"d{i}", "h1", U, "web", "start", {}, "bob", status="succeeded") for i in range(3)]
    jobs = JobManager(lambda *a: None, accept_timeout=1, keep=2)
    jobs.restore([*done, old_running])  # newest first: the running one is the oldest
    assert [j.id for j in jobs.all()] == ["d0", "r"]  # `keep` in all, the running one kept
    assert jobs.stats()[1] == 1


@pytest.mark.unit
def test_a_job_persisted_too_slowly_is_never_timed_out_early_nor_sent() -> None:
    from gateway.errors import Unavailable

    sent: list[str] = []
    expired: list[object] = []
    jobs: JobManager
    clock = FakeClock()

    def slow_persist(job: object) -> None:
        # The janitor runs while SQLite is busy: it must leave the job to its request thread.
        expired.extend(jobs.expire(clock.monotonic() + 60))
        clock.advance(0.4)  # past the command's not_after

    jobs = JobManager(
        lambda _h, request, _e: sent.append(request.id),
        accept_timeout=0.2,
        persist=slow_persist,
        clock=clock,
    )
    with pytest.raises(Unavailable) as exc:
        submit(jobs)
    assert expired == [] and sent == []  # never published: the agent would refuse it anyway
    assert status_of(exc.value) == 503 and exc.value.code == "store_slow"
    job = jobs.all()[0]
    assert job.status == "rejected" and job.error is not None
    assert job.error["code"] == "store_slow" and exc.value.extra["job"]["id"] == job.id


@pytest.mark.unit
def test_only_a_vms_own_unfinished_jobs_block_it_and_count_as_in_flight() -> None:
    from gateway.errors import Unavailable

    disk_full = [False]

    def persist(_job: object) -> None:
        if disk_full[0]:
            raise OSError("disk full")

    jobs = JobManager(lambda *a: None, accept_timeout=0.5, keep=10, persist=persist)
    other_vm = "a0000000-0000-4000-8000-000000000002"
    first = jobs.submit("h1", U, "web", "shutdown", CommandParams(), "bob")
    jobs.submit("h1", other_vm, "db", "shutdown", CommandParams(), "bob")  # another VM
    elsewhere = jobs.submit("h2", U, "web", "shutdown", CommandParams(), "bob")  # another host
    assert jobs.stats()[1] == 3
    with pytest.raises(Conflict):
        jobs.submit("h1", U, "web", "reboot", CommandParams(), "bob")
    ended = CommandReply(
        id=first.id, host="h1", status="succeeded", action="shutdown", vm=U, state="stopped"
    )
    assert jobs.on_reply(ended) is None and jobs.stats()[1] == 2
    # A job that could not be recorded was never sent: it blocks nothing and is not in flight.
    disk_full[0] = True
    with pytest.raises(Unavailable):
        jobs.submit("h1", U, "web", "start", CommandParams(), "bob")
    disk_full[0] = False
    again = jobs.submit("h1", U, "web", "start", CommandParams(), "bob")
    assert jobs.stats()[1] == 3
    jobs.host_offline("h1")  # ends h1's jobs only
    assert again.status == "failed" and elsewhere.status == "pending"
    assert jobs.stats()[1] == 1
    assert [j.id for j in jobs.expire(elsewhere.accept_deadline + 1)] == []  # its thread's


@pytest.mark.unit
def test_a_late_end_leaves_the_job_running_then_it_finishes() -> None:
    clock = FakeClock()
    jobs, _ = manager([(0.01, "accepted"), (1.5, "succeeded")], accept=5, clock=clock)
    updates: list[str] = []
    jobs.listen(lambda j: updates.append(j.status))
    job = submit(jobs)
    assert not jobs.run(job, wait_s=0.05)
    assert job.status == "accepted"
    clock.advance(10)
    assert job.status == "succeeded"
    assert updates == ["pending", "accepted", "succeeded"]


@pytest.mark.unit
def test_accepted_jobs_without_an_end_expire() -> None:
    clock = FakeClock()
    jobs, _ = manager([(0.0, "accepted")], clock=clock)
    job = submit(jobs, "start")
    jobs.run(job, wait_s=0)
    assert jobs.expire(clock.monotonic()) == []
    assert jobs.expire(clock.monotonic() + 3600) == [job]
    assert job.status == "timed_out"


@pytest.mark.unit
def test_a_late_reply_replaces_a_guess_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    jobs, _agent = manager([(0.01, "accepted")], accept=1, clock=clock)
    job = submit(jobs)
    assert not jobs.run(job, wait_s=0.1) and job.status == "accepted"
    jobs.expire(job.deadline + 1)  # the agent never said: the gateway's guess
    assert (job.status, job.error and job.error["code"]) == ("timed_out", "no_final_reply")
    with caplog.at_level("WARNING"):
        late = CommandReply(id=job.id, host="h1", status="succeeded", vm=U, state="stopped")
        assert jobs.on_reply(late) is None
    assert (job.status, job.state, job.error) == ("succeeded", "stopped", None)
    assert job.revised is not None and job.revised["status"] == "timed_out"
    assert job.to_dict()["revised"]["error"]["code"] == "no_final_reply"
    assert f"job {job.id}: the agent's succeeded replaces the gateway's timed_out" in caplog.text
    # Counted once, under its first final status; the correction has its own counter.
    counts, in_flight = jobs.stats()
    assert (counts.get("timed_out"), counts.get("succeeded"), in_flight) == (1, None, 0)
    assert jobs.revision_counts() == {("timed_out", "succeeded"): 1}


@pytest.mark.unit
def test_a_job_and_its_audit_entry_keep_every_fact_of_each_other() -> None:
    import dataclasses
    from datetime import timedelta

    from gateway.core.jobs import Job
    from gateway.core.records import AuditEntry, audit_of, job_of
    from shared.messages import utc_now

    t = [utc_now() + timedelta(seconds=i) for i in range(4)]
    job = Job(
        "j", "h1", U, "web", "shutdown", {"timeout_s": 5.0}, "bob", status="succeeded",
        state="stopped", changed=True, escalated=False, error={"code": "c", "message": "m"},
        created_at=t[0], updated_at=t[1], accepted_at=t[2], finished_at=t[3],
        revised={"status": "timed_out", "error": None, "at": "x"},
    )  # fmt: skip
    entry = audit_of(job)
    assert (entry.ts, entry.result) == (t[0], "succeeded")
    assert job_of(entry).to_dict() == job.to_dict()
    # A job with every fact set fills every field of its entry.
    assert all(getattr(entry, f.name) is not None for f in dataclasses.fields(AuditEntry))
