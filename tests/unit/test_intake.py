"""The command intake: what reaches the executor, and what is refused with which reply.

Pure: the bus is a recorder, the executor is the real one with `submit` recorded instead of
run (running a command starts a worker thread), so every refusal goes through the executor's
real reply path.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from agent.bus import Inbound, Outbound
from agent.commands.executor import CommandExecutor
from agent.commands.intake import Intake
from agent.commands.requests import MAX_COMMAND_BYTES
from agent.config import AgentSettings
from agent.inventory import Inventory
from agent.publisher import Publisher
from shared.messages import CommandParams, CommandRequest, dump, utc_now
from shared.topics import Topics

pytestmark = pytest.mark.unit

HOST = "kvm1"
UUID = "a0000000-0000-4000-8000-000000000001"
TOPICS = Topics("kvmsup")
CMD = TOPICS.cmd(HOST)
REPLY = TOPICS.reply(HOST, "gw-1")
EVENTS = TOPICS.host_events(HOST)


class RecordingBus:
    """What the agent handed to MQTT, in order, with each message's CorrelationData."""

    def __init__(self) -> None:
        self.sent: list[tuple[Outbound, bytes | None]] = []

    def publish(self, msg: Outbound, *, correlation: bytes | None = None) -> bool:
        self.sent.append((msg, correlation))
        return True

    def on(self, topic: str) -> list[tuple[Outbound, bytes | None]]:
        return [(m, c) for m, c in self.sent if m.topic == topic]

    def payloads(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m, _ in self.on(topic)]


class Libvirt:
    """Never reached by a refusal; up, for the host status."""

    connected = True


class RecordingExecutor(CommandExecutor):
    def __init__(self, publisher: Publisher, inventory: Inventory) -> None:
        super().__init__(
            HOST,
            Libvirt(),  # type: ignore[arg-type]
            inventory,
            publisher.command_outcome,
            on_change=lambda _uuid: None,
        )
        self.submitted: list[CommandRequest] = []

    def submit(self, request: CommandRequest, send: Any) -> None:
        self.submitted.append(request)


@pytest.fixture
def world() -> tuple[Intake, RecordingBus, RecordingExecutor]:
    settings = AgentSettings(host_id=HOST, topic_prefix="kvmsup", ha_discovery=False)
    bus = RecordingBus()
    inventory = Inventory(HOST)
    publisher = Publisher(
        settings,
        TOPICS,
        bus,
        Libvirt(),
        inventory,
        None,
        utc_now(),  # type: ignore[arg-type]
    )
    executor = RecordingExecutor(publisher, inventory)
    return Intake(HOST, TOPICS, bus, executor, publisher), bus, executor  # type: ignore[arg-type]


def request(req_id: str = "job-1", *, expires_in: float = 5.0, action: str = "start") -> bytes:
    return dump(
        CommandRequest(
            id=req_id,
            action=action,  # type: ignore[arg-type]
            vm=UUID,
            params=CommandParams(),
            by="alice",
            not_after=utc_now() + timedelta(seconds=expires_in),
        )
    )


def command(
    payload: bytes,
    *,
    correlation: bytes | None = b"job-1",
    response_topic: str | None = REPLY,
    retain: bool = False,
) -> Inbound:
    return Inbound(CMD, payload, retain, response_topic, correlation)


def only_reply(bus: RecordingBus) -> tuple[dict[str, Any], Outbound, bytes | None]:
    replies = bus.on(REPLY)
    assert len(replies) == 1, bus.sent
    msg, corr = replies[0]
    return json.loads(msg.payload), msg, corr


def test_a_valid_request_goes_to_the_executor_once_and_nothing_is_refused(world: Any) -> None:
    intake, bus, executor = world
    intake.on_command(command(request("job-1")))
    assert [(r.id, r.action, r.vm, r.by) for r in executor.submitted] == [
        ("job-1", "start", UUID, "alice")
    ]
    assert bus.sent == []  # its replies are the executor's, once it runs


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"{not json", "bad_request"),
        (b"\xff\xfe", "bad_request"),
        (json.dumps({"id": "job-1", "action": "explode", "vm": UUID}).encode(), "bad_request"),
        (b"x" * (MAX_COMMAND_BYTES + 1), "too_large"),
    ],
    ids=["malformed-json", "not-utf8", "unknown-action", "too-large"],
)
def test_a_malformed_request_is_rejected_on_its_reply_topic_and_never_run(
    world: Any, payload: bytes, code: str
) -> None:
    intake, bus, executor = world
    intake.on_command(command(payload, correlation=b"job-1"))
    reply, msg, corr = only_reply(bus)
    assert reply["status"] == "rejected" and reply["error"]["code"] == code
    assert reply["id"] == "job-1"  # recovered from the CorrelationData
    assert corr == b"job-1"  # so the gateway can match it to its job
    assert (msg.qos, msg.retain) == (1, False)
    assert executor.submitted == []


def test_an_expired_request_is_rejected_expired_with_its_id_action_and_vm(world: Any) -> None:
    intake, bus, executor = world
    intake.on_command(command(request("job-1", expires_in=-1)))
    reply, _, _ = only_reply(bus)
    assert reply["status"] == "rejected" and reply["error"]["code"] == "expired"
    assert (reply["id"], reply["action"], reply["vm"]) == ("job-1", "start", UUID)
    assert executor.submitted == []


def test_a_request_whose_correlation_differs_from_its_id_is_not_run(world: Any) -> None:
    intake, bus, executor = world
    intake.on_command(command(request("job-1"), correlation=b"job-2"))
    reply, _, corr = only_reply(bus)
    assert reply["error"]["code"] == "bad_request"
    assert corr == b"job-2"
    assert executor.submitted == []


def test_a_retained_request_is_rejected_retained_and_never_run(world: Any) -> None:
    intake, bus, executor = world
    intake.on_command(command(request("job-1"), retain=True))
    reply, _, corr = only_reply(bus)
    assert reply["status"] == "rejected" and reply["error"]["code"] == "retained"
    assert corr == b"job-1"
    assert executor.submitted == []


def test_every_rejection_is_also_on_the_hosts_events_for_the_audit_trail(world: Any) -> None:
    intake, bus, _ = world
    intake.on_command(command(request("job-1", expires_in=-1)))
    [event] = bus.payloads(EVENTS)
    assert (event["kind"], event["id"], event["status"]) == ("command", "job-1", "rejected")
    assert event["error"]["code"] == "expired"


@pytest.mark.parametrize(
    "response_topic",
    [
        None,
        "elsewhere/reply",
        TOPICS.reply("kvm2", "gw-1"),  # another host's replies
        TOPICS.reply(HOST, "gw-1") + "/deeper",
        TOPICS.reply_prefix(HOST) + "+",
    ],
    ids=["none", "foreign", "other-host", "deeper", "wildcard"],
)
def test_a_response_topic_outside_the_hosts_reply_prefix_gets_no_reply_at_all(
    world: Any, response_topic: str | None
) -> None:
    intake, bus, executor = world
    intake.on_command(command(request("job-1"), response_topic=response_topic))
    assert executor.submitted == []
    # Nothing is published anywhere the sender chose; the refusal is only on `events`.
    assert [m.topic for m, _ in bus.sent] == [EVENTS]
    [event] = bus.payloads(EVENTS)
    assert (event["event"], event["status"]) == ("refused", "rejected")
    assert event["error"]["code"] == "bad_response_topic"


def test_a_reply_without_correlation_data_is_correlated_by_the_request_id(world: Any) -> None:
    intake, bus, _ = world
    intake.on_command(command(request("job-9", expires_in=-1), correlation=None))
    reply, _, corr = only_reply(bus)
    assert reply["id"] == "job-9" and corr == b"job-9"


@pytest.mark.parametrize(
    "word, action", [("ON", "start"), ("off", "shutdown"), ("reboot", "reboot")]
)
def test_a_plain_set_runs_its_action_on_behalf_of_mqtt(world: Any, word: str, action: str) -> None:
    intake, bus, executor = world
    intake.on_set(UUID, Inbound(TOPICS.vm_set(HOST, UUID), word.encode(), False))
    [req] = executor.submitted
    assert (req.action, req.vm, req.by) == (action, UUID, "mqtt-set")
    assert req.not_after > utc_now()
    assert bus.sent == []


def test_a_retained_set_is_ignored(world: Any) -> None:
    intake, bus, executor = world
    intake.on_set(UUID, Inbound(TOPICS.vm_set(HOST, UUID), b"ON", True))
    assert executor.submitted == [] and bus.sent == []


def test_an_unknown_set_word_is_rejected_on_events_only(world: Any) -> None:
    intake, bus, executor = world
    intake.on_set(UUID, Inbound(TOPICS.vm_set(HOST, UUID), b"explode", False))
    assert executor.submitted == []
    assert [m.topic for m, _ in bus.sent] == [EVENTS]  # a `set` has no reply topic
    [event] = bus.payloads(EVENTS)
    assert (event["status"], event["uuid"]) == ("rejected", UUID)
    assert event["error"]["code"] == "unknown_action"
