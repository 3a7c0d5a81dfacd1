"""Commands over MQTT v5: accepted then final, once per id, refusals, `set` (SPEC §3)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.agentctl import DEMO_A, AgentClient
from tests.support.procs import demo_node_uri

pytestmark = pytest.mark.service

WEB = DEMO_A["web-01"]
OFF = DEMO_A["shared-vm"]


def assert_no_op(reply: dict, state: str) -> None:
    """A barrier's reply: the agent admits requests in the order it receives them, so this
    later request was admitted after the earlier one, and its state read (the VM already
    `state`, nothing done) shows the earlier one did not act on the VM."""
    assert (reply["status"], reply["changed"], reply["state"]) == ("succeeded", False, state)


@pytest.fixture
def agent_a(recorder, start_agent):
    client = AgentClient(recorder, "demo-a")
    start_agent("demo-a", demo_node_uri("demo-a"))
    client.wait_state(WEB, "running")
    return client


@pytest.mark.parametrize(
    ("vm", "action", "params", "final_state"),
    [
        (OFF, "start", {}, "running"),
        (WEB, "shutdown", {"timeout_s": 5}, "stopped"),
        (WEB, "destroy", {}, "stopped"),
        (WEB, "reboot", {}, "running"),
        (WEB, "reset", {}, "running"),
        (WEB, "suspend", {}, "paused"),
    ],
)
def test_each_action_is_accepted_then_done(agent_a, vm, action, params, final_state):
    request_id = agent_a.request(action, vm, params=params)
    final = agent_a.wait_final(request_id)
    replies = agent_a.replies(request_id)
    assert [r["status"] for r in replies] == ["accepted", "succeeded"]
    assert final["id"] == request_id and final["action"] == action and final["vm"] == vm
    assert final["state"] == final_state and final["changed"] is True
    agent_a.wait_state(vm, final_state)


def test_resume_after_suspend(agent_a):
    assert agent_a.call("suspend", WEB)["state"] == "paused"
    reply = agent_a.call("resume", WEB)
    assert reply["status"] == "succeeded" and reply["state"] == "running"
    agent_a.wait_state(WEB, "running")


def test_desired_state_already_reached_is_a_no_op(agent_a):
    reply = agent_a.call("start", WEB)
    assert reply["status"] == "succeeded" and reply["changed"] is False
    assert reply["state"] == "running"
    reply = agent_a.call("destroy", OFF)
    assert reply["status"] == "succeeded" and reply["changed"] is False


def test_invalid_transition_fails_with_a_code(agent_a):
    reply = agent_a.call("reboot", OFF)
    assert reply["status"] == "failed" and reply["error"]["code"] == "invalid_state"


def test_same_id_twice_runs_once(agent_a):
    request_id = agent_a.request("suspend", WEB)
    first = agent_a.wait_final(request_id)
    assert first["status"] == "succeeded"
    # A resume in between: a second run of the suspend would pause the VM again.
    assert agent_a.call("resume", WEB)["state"] == "running"
    agent_a.request("suspend", WEB, request_id=request_id)
    agent_a.rec.wait_for(
        lambda m: m.topic == agent_a.reply_topic and m.correlation == request_id.encode(),
        count=3,
        timeout=5,
    )
    replies = agent_a.replies(request_id)
    assert [r["status"] for r in replies] == ["accepted", "succeeded", "succeeded"]
    assert replies[-1] == first
    # Barrier: a later resume, admitted after the copy; running already, so a no-op unless
    # the copy paused the VM again.
    assert_no_op(agent_a.call("resume", WEB), "running")
    assert len(agent_a.replies(request_id)) == 3  # a second run would have been accepted again
    assert agent_a.states(WEB)[-1]["state"] == "running"
    runs = [
        e
        for e in agent_a.events()
        if e["kind"] == "command" and e["id"] == request_id and e["status"] == "succeeded"
    ]
    assert len(runs) == 1


def test_expired_request_is_refused(agent_a):
    past = datetime.now(UTC) - timedelta(seconds=5)
    reply = agent_a.call("destroy", WEB, not_after=past)
    assert reply["status"] == "rejected" and reply["error"]["code"] == "expired"
    assert agent_a.replies(reply["id"])[0]["status"] == "rejected"  # never accepted
    assert_no_op(agent_a.call("start", WEB), "running")  # barrier: WEB was not destroyed
    assert [r["status"] for r in agent_a.replies(reply["id"])] == ["rejected"]
    assert agent_a.states(WEB)[-1]["state"] == "running"


def test_request_without_not_after_is_refused(agent_a):
    # No deadline means no moment after which the agent promises not to act: refused.
    body = {"v": 1, "id": "no-deadline-1", "action": "destroy", "vm": WEB, "by": "tester"}
    request_id = agent_a.request(
        "destroy", WEB, raw=json.dumps(body).encode(), request_id="no-deadline-1"
    )
    reply = agent_a.wait_final(request_id)
    assert reply["status"] == "rejected" and reply["error"]["code"] == "bad_request"
    assert "not_after" in reply["error"]["message"]
    assert agent_a.replies(request_id)[0]["status"] == "rejected"  # never accepted
    assert agent_a.call("start", OFF)["status"] == "succeeded"  # still serving
    assert agent_a.states(WEB)[-1]["state"] == "running"


def test_retained_request_is_refused(agent_a):
    request_id = agent_a.request("destroy", WEB, retain=True)
    reply = agent_a.wait_final(request_id)
    assert reply["status"] == "rejected" and reply["error"]["code"] == "retained"
    agent_a.rec.publish(agent_a.topics.cmd("demo-a"), b"", retain=True)  # clean the broker
    assert_no_op(agent_a.call("start", WEB), "running")  # barrier: WEB was not destroyed
    assert [r["status"] for r in agent_a.replies(request_id)] == ["rejected"]
    assert agent_a.states(WEB)[-1]["state"] == "running"


def test_foreign_response_topic_is_refused(agent_a):
    foreign = "kvmsup/v1/demo-b/reply/gw1"
    agent_a.rec.subscribe(foreign)
    request_id = agent_a.request("destroy", WEB, response_topic=foreign)
    refused = agent_a.rec.wait_for(
        lambda m: m.topic.endswith("/events") and m.json().get("event") == "refused"
    )
    assert refused[-1].json()["error"]["code"] == "bad_response_topic"
    assert_no_op(agent_a.call("start", WEB), "running")  # barrier: WEB was not destroyed
    assert agent_a.rec.on(foreign) == []
    assert agent_a.replies(request_id) == []
    assert agent_a.states(WEB)[-1]["state"] == "running"


def test_unknown_vm_and_unknown_action_are_rejected(agent_a):
    reply = agent_a.call("start", "a0000000-0000-4000-8000-00000000dead")
    assert reply["status"] == "rejected" and reply["error"]["code"] == "vm_not_found"
    reply = agent_a.call("explode", WEB)
    assert reply["status"] == "rejected" and reply["error"]["code"] == "bad_request"
    assert "action" in reply["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "word"),
    [
        (b"not json at all", "bad_request"),
        (b'{"v":1,"id":"x1","action":"start","vm":42}', "bad_request"),
        (
            b'{"v":1,"id":"x2","action":"start","vm":"u","params":{"timeout_s":"soon"}}',
            "bad_request",
        ),
        (b"\xff\xfe\xfa invalid utf-8", "bad_request"),
        (b"[" * (1024 * 1024), "too_large"),
    ],
    ids=["not-json", "wrong-type", "wrong-param-type", "invalid-utf8", "1MiB"],
)
def test_malformed_commands_get_a_rejection_and_the_agent_keeps_serving(agent_a, payload, word):
    request_id = agent_a.request("start", OFF, raw=payload, request_id=f"bad-{word}-{len(payload)}")
    reply = agent_a.wait_final(request_id)
    assert reply["status"] == "rejected" and reply["error"]["code"] == word
    # Still serving: a good command right after works.
    assert agent_a.call("start", OFF)["status"] == "succeeded"


def test_set_payloads(agent_a):
    set_topic = agent_a.topics.vm_set("demo-a", OFF)
    for payload, state in [
        (b"ON", "running"),
        (b"suspend", "paused"),
        (b"resume", "running"),
        (b"OFF", "stopped"),
    ]:
        since = time.monotonic()
        agent_a.rec.publish(set_topic, payload)
        agent_a.wait_state(OFF, state, since=since)
    # The outcome event is published by the command worker, the state by the libvirt event
    # thread: the last outcome may arrive after the "stopped" state.
    events_topic = agent_a.topics.host_events("demo-a")
    agent_a.rec.wait_for(
        lambda m: (
            m.topic == events_topic
            and m.json().get("kind") == "command"
            and m.json().get("uuid") == OFF
            and m.json().get("action") == "shutdown"
        ),
        timeout=20,
    )
    outcomes = [e for e in agent_a.events() if e["kind"] == "command" and e["uuid"] == OFF]
    assert [e["action"] for e in outcomes] == ["start", "suspend", "resume", "shutdown"]
    assert all(e["status"] == "succeeded" and e["by"] == "mqtt-set" for e in outcomes)


def test_bad_and_retained_set_payloads_are_ignored(agent_a):
    set_topic = agent_a.topics.vm_set("demo-a", OFF)
    agent_a.rec.publish(set_topic, b"ON", retain=True)
    agent_a.rec.publish(set_topic, b"\xff\xfe")
    agent_a.rec.publish(set_topic, b"launch-missiles")
    rejected = agent_a.rec.wait_for(
        lambda m: m.topic.endswith("/events") and m.json().get("status") == "rejected", count=2
    )
    assert {m.json()["error"]["code"] for m in rejected} == {"bad_request", "unknown_action"}
    assert_no_op(agent_a.call("destroy", OFF), "stopped")  # barrier: the retained ON ignored
    assert agent_a.states(OFF)[-1]["state"] == "stopped"
    agent_a.rec.publish(set_topic, b"", retain=True)
    agent_a.rec.publish(set_topic, b"start")
    agent_a.wait_state(OFF, "running", since=time.monotonic() - 0.5)


def test_shutdown_escalation_rules_on_a_guest_that_stops(agent_a):
    reply = agent_a.call("shutdown", WEB, params={"timeout_s": 3, "force_after": True})
    assert reply["status"] == "succeeded" and reply["state"] == "stopped"
    assert not reply.get("escalated")


def test_copies_of_a_known_id_never_get_a_second_outcome(agent_a):
    # Any client may send a copy of a known id: retained, malformed, or past its not_after
    # (a redelivery after a long reconnect). Each gets the id's one outcome, never `rejected`.
    request_id = agent_a.request("suspend", WEB)
    assert agent_a.wait_final(request_id)["status"] == "succeeded"
    agent_a.request("suspend", WEB, request_id=request_id, retain=True)
    agent_a.rec.publish(agent_a.topics.cmd("demo-a"), b"", retain=True)  # clean the broker
    agent_a.request("suspend", WEB, request_id=request_id, raw=b"{not json")
    past = datetime.now(UTC) - timedelta(seconds=1)
    agent_a.request("suspend", WEB, request_id=request_id, not_after=past)
    agent_a.rec.wait_for(
        lambda m: m.topic == agent_a.reply_topic and m.correlation == request_id.encode(),
        count=5,
        timeout=10,
    )
    statuses = [r["status"] for r in agent_a.replies(request_id)]
    assert statuses == ["accepted", "succeeded", "succeeded", "succeeded", "succeeded"]
