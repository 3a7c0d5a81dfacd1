"""Several gateways on one broker (docs/SCALING.md): each has the whole fleet, gets only its
own replies, and shows the jobs the others sent; with a Redis message queue, a client of any
gateway follows every step of a job sent through another, once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import wait_ready
from tests.support.gateway import GatewayProc, SioClient, wait_until
from tests.support.mqtt import Recorder
from tests.support.procs import Service
from tests.support.redis import RedisServer

pytestmark = pytest.mark.service

# A busy machine (CI, parallel helpers) slows every process: generous, never timed.
SLOW = 30.0


def fleet(gw: GatewayProc) -> set[tuple[str, str, str]]:
    return {(v["host"], v["uuid"], v["name"]) for v in gw.get("/vms").json()["vms"]}


def steps(client: SioClient, job_id: str) -> list[str]:
    return [d["status"] for d in client.of("job_update") if d.get("id") == job_id]


def job_on(gw: GatewayProc, job_id: str) -> dict[str, Any]:
    """The job as `gw` serves it, once it has one that is finished."""

    def finished() -> dict[str, Any] | None:
        resp = gw.get(f"/jobs/{job_id}")
        return resp.json() if resp.status_code == 200 and resp.json()["finished"] else None

    found: dict[str, Any] = wait_until(finished, SLOW)
    return found


def command(gw: GatewayProc, path: str, **kw: Any) -> dict[str, Any]:
    resp = gw.post(path, **kw)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert body["status"] == "succeeded" and body["foreign"] is False, body
    return body


@pytest.fixture
def sio_clients() -> Iterator[Callable[[GatewayProc], SioClient]]:
    opened: list[SioClient] = []

    def open_on(gw: GatewayProc) -> SioClient:
        opened.append(gw.sio())
        return opened[-1]

    yield open_on
    for client in opened:
        client.close()


def test_two_gateways_on_one_broker_share_the_fleet_and_each_others_jobs(
    demo_agents: dict[str, Service],
    start_gateway: Callable[..., GatewayProc],
    recorder: Recorder,
    sio_clients: Callable[[GatewayProc], SioClient],
) -> None:
    recorder.subscribe("kvmsup/v1/+/reply/#")
    gw_a = start_gateway(gateway_id="gw-a")
    gw_b = start_gateway(gateway_id="gw-b")
    for gw in (gw_a, gw_b):
        wait_ready(gw, timeout=SLOW)
    # Plain subscriptions: each gateway has every host and VM, retained ones included.
    assert fleet(gw_a) == fleet(gw_b) and len(fleet(gw_a)) == 7
    on_a, on_b = sio_clients(gw_a), sio_clients(gw_b)

    job = command(gw_a, "/vm/web-01/stop", json={"force": True})
    # The agent answered on gw-a's reply topic only: accepted, then the outcome.
    replies = recorder.wait_for(lambda m: m.correlation == job["id"].encode(), SLOW, count=2)
    assert {m.topic for m in replies} == {"kvmsup/v1/demo-a/reply/gw-a"}

    # gw-b learns of the job from the host's events stream: REST and a Socket.IO push.
    seen = job_on(gw_b, job["id"])
    assert seen["foreign"] is True
    for key in ("host", "vm", "name", "action", "by", "status", "state"):
        assert seen[key] == job[key], key
    assert any(j["id"] == job["id"] for j in gw_b.get("/jobs").json()["jobs"])
    # Each audit holds what its own gateway handled; both hold the outcome in their events.
    wait_until(lambda: any(a["id"] == job["id"] for a in gw_a.get("/audit").json()["audit"]))
    assert all(a["id"] != job["id"] for a in gw_b.get("/audit").json()["audit"])
    wait_until(
        lambda: any(
            e.get("id") == job["id"] for e in gw_b.get("/events?kind=command").json()["events"]
        ),
        SLOW,
    )
    pushed = on_b.wait_for("job_update", lambda d: d.get("id") == job["id"], SLOW)
    assert (pushed["status"], pushed["foreign"]) == ("succeeded", True)
    # The issuing gateway's own clients follow each step, from its replies.
    wait_until(lambda: "succeeded" in steps(on_a, job["id"]), SLOW)
    assert steps(on_a, job["id"]) == ["pending", "accepted", "succeeded"]
    wait_until(lambda: gw_b.get("/vm/web-01").json()["state"] == "stopped", SLOW)

    # And the other way round: a command through gw-b, answered to gw-b only.
    back = command(gw_b, "/vm/web-01/start")
    replies = recorder.wait_for(lambda m: m.correlation == back["id"].encode(), SLOW, count=2)
    assert {m.topic for m in replies} == {"kvmsup/v1/demo-a/reply/gw-b"}
    assert job_on(gw_a, back["id"])["foreign"] is True
    on_a.wait_for("job_update", lambda d: d.get("id") == back["id"], SLOW)
    assert steps(on_a, back["id"]) == ["succeeded"]
    assert steps(on_b, job["id"]) == ["succeeded"]  # still one push for gw-a's job

    # Neither gateway was handed a reply meant for the other.
    for gw in (gw_a, gw_b):
        dropped = gw.get("/health").json()["messages_dropped"]
        assert dropped["unknown_job"] == 0 and dropped["bad_topic"] == 0, dropped


def test_with_a_redis_queue_a_client_of_any_gateway_gets_each_job_step_once(
    tmp_path: Path,
    demo_agents: dict[str, Service],
    start_gateway: Callable[..., GatewayProc],
    sio_clients: Callable[[GatewayProc], SioClient],
    recorder: Recorder,
) -> None:
    redis = RedisServer(tmp_path).start()
    try:
        queue = {"KVMSUP_SIO_MESSAGE_QUEUE": redis.url}
        gw_a = start_gateway(gateway_id="gw-a", **queue)
        gw_b = start_gateway(gateway_id="gw-b", **queue)
        for gw in (gw_a, gw_b):
            wait_ready(gw, timeout=SLOW)
        on_a, on_b = sio_clients(gw_a), sio_clients(gw_b)
        on_b.call("subscribe_metrics", {"name": "web-01"})

        job = command(gw_a, "/vm/web-01/stop")
        # Every step reaches gw-b's client live, through Redis, as gw-a's client gets it.
        for client in (on_a, on_b):
            wait_until(lambda c=client: "succeeded" in steps(c, job["id"]), SLOW)
        # gw-b records the job from the events stream but does not push it again: once it
        # serves the job, a command of its own (whose first push queues behind anything gw-b
        # had for the first job) marks the end of what it could have sent.
        assert job_on(gw_b, job["id"])["foreign"] is True
        mark = command(gw_b, "/vm/web-01/start")
        for client in (on_a, on_b):
            wait_until(lambda c=client: "succeeded" in steps(c, mark["id"]), SLOW)
        for client in (on_a, on_b):
            assert steps(client, job["id"]) == ["pending", "accepted", "succeeded"]
            assert steps(client, mark["id"]) == ["pending", "accepted", "succeeded"]

        # A plain command on `set` (Home Assistant's) has no gateway to push it through the
        # queue: each gateway pushes its outcome to its own clients, once.
        web = next(v for v in gw_b.get("/vms").json()["vms"] if v["name"] == "web-01")
        recorder.publish(f"kvmsup/v1/demo-a/vm/{web['uuid']}/set", "OFF")
        plain = on_b.wait_for("job_update", lambda d: d.get("by") == "mqtt-set", SLOW)
        assert (plain["status"], plain["foreign"]) == ("succeeded", True)
        on_a.wait_for("job_update", lambda d: d.get("id") == plain["id"], SLOW)
        # Marks again: a command through each gateway, behind anything either had to push.
        marks = [command(gw_a, "/vm/web-01/start"), command(gw_b, "/vm/web-01/stop")]
        for client in (on_a, on_b):
            for mark in marks:
                wait_until(lambda c=client, m=mark: "succeeded" in steps(c, m["id"]), SLOW)
            assert steps(client, plain["id"]) == ["succeeded"]

        # What each gateway derives from MQTT itself stays local: one copy per change, not
        # one per gateway, and the metrics stream likewise.
        states = [d for d in on_b.of("vm_state") if d["uuid"] == web["uuid"]]
        assert {d["state"] for d in states} >= {"stopped", "running"}
        seqs = [d["seq"] for d in states]
        assert len(seqs) == len(set(seqs)), seqs
        wait_until(lambda: len(on_b.of("vm_metrics")) >= 3, SLOW)
        stamps = [(d["uuid"], d["ts"]) for d in on_b.of("vm_metrics")]
        assert len(stamps) == len(set(stamps)), stamps

        # Redis away: commands and the pushes each gateway derives itself go on (job updates
        # are lost meanwhile, and REST still has the jobs) ...
        redis.stop()
        seen = len(on_b.of("vm_state"))
        down = command(gw_a, "/vm/web-01/start")
        assert job_on(gw_b, down["id"])["status"] == "succeeded"
        wait_until(
            lambda: any(
                d["uuid"] == web["uuid"] and d["state"] == "running"
                for d in on_b.of("vm_state")[seen:]
            ),
            SLOW,
        )
        # ... and job updates cross again once it is back (on the same address).
        redis.start()
        wait_until(lambda: redis.subscribers("kvmsup-socketio") == 2, 90)
        back = command(gw_a, "/vm/web-01/stop", json={"force": True})
        wait_until(lambda: "succeeded" in steps(on_b, back["id"]), SLOW)
        assert steps(on_b, back["id"]) == ["pending", "accepted", "succeeded"]
        for gw in (gw_a, gw_b):  # the queue's URL holds its password: never in a log
            assert redis.password not in gw.service.output()
    finally:
        redis.stop()
