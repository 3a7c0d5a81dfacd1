"""Jobs: accepted → final, 504 without `accepted`, 202 when the end is late, conflicts."""

from __future__ import annotations

import pytest

from gateway.core.jobs import CLOCK_MARGIN_S, JobManager
from gateway.errors import AgentTimeout, Conflict
from gateway.web.http_errors import status_of
from shared.messages import CommandParams, CommandReply, CommandRequest
from tests.support.jobs import FakeClock, U, manager, submit

pytestmark = pytest.mark.unit


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


def test_restore_keeps_every_unfinished_job_beyond_the_limit() -> None:
    from gateway.core.jobs import Job

    old_running = Job("r", "h1", U, "web", "shutdown", {}, "bob", status="accepted")
    done = [Job(f"d{i}", "h1", U, "web", "start", {}, "bob", status="succeeded") for i in range(3)]
    jobs = JobManager(lambda *a: None, accept_timeout=1, keep=2)
    jobs.restore([*done, old_running])  # newest first: the running one is the oldest
    assert [j.id for j in jobs.all()] == ["d0", "r"]  # `keep` in all, the running one kept
    assert jobs.stats()[1] == 1


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


def test_accepted_jobs_without_an_end_expire() -> None:
    clock = FakeClock()
    jobs, _ = manager([(0.0, "accepted")], clock=clock)
    job = submit(jobs, "start")
    jobs.run(job, wait_s=0)
    assert jobs.expire(clock.monotonic()) == []
    assert jobs.expire(clock.monotonic() + 3600) == [job]
    assert job.status == "timed_out"


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
