"""Snapshot commands on the executor's path, on fake time: the same safety as lifecycle commands
(one deadline, never acted on late), their refusals, and the params each action takes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import timedelta

import pytest

from agent import domstate
from agent.commands.executor import CommandExecutor
from agent.commands.requests import Rejection, decode_command, decode_set
from agent.commands.settings import ExecutorSettings, Pools
from agent.errors import SnapshotRefused
from agent.hypervisor import DomainInfo, SnapshotOrder
from agent.hypervisor.operations import Guard
from agent.hypervisor.snapshots import _record, create_xml
from agent.inventory import Inventory
from shared.messages import CommandReply, CommandRequest, dump, utc_now
from tests.support.clock import FakeClock, InlinePool, ManualPool

pytestmark = pytest.mark.unit

UUID = "a0000000-0000-4000-8000-000000000001"


class Libvirt:
    """One VM's state and snapshots; records the orders that got past their guard."""

    connected = True

    def __init__(self, state: int = domstate.RUNNING) -> None:
        self.state = state
        self.done: list[SnapshotOrder] = []
        self.refuse: SnapshotRefused | None = None
        self.revert_to = domstate.SHUTOFF
        self.inside = False  # an order got past its guard
        self.during: Callable[[], None] | None = None  # runs while an order is with libvirt

    def domain_state(self, uuid: str) -> tuple[int, int]:
        return self.state, 0

    def snapshot(self, uuid: str, order: SnapshotOrder, guard: Guard | None = None) -> None:
        if self.refuse is not None:  # decided from libvirt's reads, before the guard
            raise self.refuse
        with guard() if guard is not None else contextlib.nullcontext():
            self.inside = True
            if self.during is not None:
                self.during()
            self.done.append(order)
            if order.action == "snapshot_revert":
                self.state = self.revert_to


class World:
    def __init__(self, inline: bool = False, state: int = domstate.RUNNING, **settings: float):
        self.clock = FakeClock()
        self.hv = Libvirt(state)
        self.inventory = Inventory("h")
        self.inventory.update(DomainInfo(UUID, "vm", state, 0, 1, 1024, 1024, False, True))
        pool = InlinePool if inline else ManualPool
        self.calls, self.jobs = pool(), pool()
        self.replies: list[CommandReply] = []
        self.changed: list[str] = []
        self.snapshots_read: list[str] = []
        self.executor = CommandExecutor(
            "h",
            self.hv,  # type: ignore[arg-type]
            self.inventory,
            lambda *_: None,
            self.changed.append,
            ExecutorSettings(**settings),  # type: ignore[arg-type]
            self.clock,
            Pools(calls=self.calls, jobs=self.jobs, waits=self.jobs, polls=InlinePool()),
            on_snapshots=self.snapshots_read.append,
        )

    def submit(self, action: str, begin_within: float, **params: object) -> None:
        request = CommandRequest.model_validate(
            {
                "id": "c1",
                "action": action,
                "vm": UUID,
                "params": params,
                "not_after": self.clock.now() + timedelta(seconds=begin_within),
            }
        )
        self.executor.submit(request, self.replies.append)

    def final(self) -> CommandReply:
        finals = [r for r in self.replies if r.is_final]
        assert len(finals) == 1, self.replies
        return finals[0]


def test_a_snapshot_is_taken_and_its_list_re_read() -> None:
    world = World(inline=True, max_snapshots=7)
    world.submit("snapshot_create", 5, name="pre-upgrade", description="before 2.0")
    reply = world.final()
    assert (reply.status, reply.action, reply.state, reply.changed) == (
        "succeeded",
        "snapshot_create",
        "running",
        True,
    )
    [order] = world.hv.done
    assert order == SnapshotOrder("snapshot_create", "pre-upgrade", "before 2.0", True, 7)
    assert world.snapshots_read == [UUID] and world.changed == [UUID]


def test_a_revert_answers_the_state_the_snapshot_left() -> None:
    world = World(inline=True)
    world.hv.revert_to = domstate.PAUSED
    world.submit("snapshot_revert", 5, name="pre-upgrade")
    reply = world.final()
    assert (reply.status, reply.state) == ("succeeded", "paused")
    assert world.hv.done == [SnapshotOrder("snapshot_revert", "pre-upgrade")]


def test_a_snapshot_held_across_its_deadline_is_never_taken_later() -> None:
    # The call worker is with a libvirtd that stopped answering before the order began: the
    # job answers `timed_out` at the deadline; when the call runs after that, nothing is done.
    world = World(call_timeout=0.5)
    world.submit("snapshot_create", 30, name="late")
    world.calls.start()
    world.jobs.run()
    reply = world.final()
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "timeout"
    assert world.clock.elapsed == pytest.approx(0.5)
    world.calls.run()
    assert world.hv.done == [] and not world.hv.inside
    assert world.snapshots_read == []  # nothing began: nothing to re-read
    assert [r.status for r in world.replies] == ["accepted", "timed_out"]


@pytest.mark.parametrize("action", ["snapshot_revert", "snapshot_delete"])
def test_a_revert_or_delete_past_its_not_after_is_never_carried_out(action: str) -> None:
    world = World()
    world.submit(action, 2, name="s1")
    world.calls.start()
    world.jobs.run()  # the read never returned before not_after
    assert world.final().status == "timed_out"
    world.calls.run()
    assert world.hv.done == [] and world.hv.state == domstate.RUNNING


def test_agent_stop_answers_a_snapshot_not_begun_and_never_begins_it() -> None:
    world = World()
    world.submit("snapshot_delete", 20, name="s1")
    world.executor.drain(grace=2)
    reply = world.final()
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "agent_stopping"
    world.calls.run()
    world.jobs.run()
    assert world.hv.done == []


def test_a_begun_snapshot_has_its_own_timeout_s_before_it_is_reported_unknown() -> None:
    # A memory snapshot writes the guest's RAM out: once begun it has the request's
    # `timeout_s` (not the 30 s of a lifecycle call) before the reply says outcome_unknown.
    world = World(call_timeout=30)
    world.submit("snapshot_create", 5, name="big", timeout_s=120)
    world.hv.during = world.jobs.run  # the job keeps the deadline while libvirt works
    world.calls.run()
    reply = world.final()
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "outcome_unknown"
    assert world.clock.elapsed == pytest.approx(120)
    assert world.snapshots_read == [UUID]  # it began: its list is re-read
    assert [r.status for r in world.replies] == ["accepted", "timed_out"]


@pytest.mark.parametrize(
    "code",
    [
        "snapshot_raw_disk",
        "snapshot_firmware_unsupported",
        "snapshot_exists",
        "snapshot_not_found",
        "snapshot_no_space",
        "snapshot_limit",
    ],
)
def test_each_refusal_fails_with_its_own_code_and_nothing_begun(code: str) -> None:
    world = World(inline=True)
    world.hv.refuse = SnapshotRefused(code, f"refused: {code}")
    world.submit("snapshot_create", 5, name="s1")
    reply = world.final()
    assert reply.status == "failed" and reply.error is not None
    assert (reply.error.code, reply.error.message) == (code, f"refused: {code}")
    assert world.hv.done == [] and world.snapshots_read == []


def test_a_guest_suspended_to_ram_cannot_be_snapshotted() -> None:
    world = World(inline=True, state=domstate.PMSUSPENDED)
    world.submit("snapshot_create", 5, name="s1")
    reply = world.final()
    assert reply.status == "failed" and reply.error is not None
    assert reply.error.code == "invalid_state" and world.hv.done == []


def _decode(action: str, params: object) -> CommandRequest | Rejection:
    body: dict[str, object] = {
        "id": "c1",
        "action": action,
        "vm": UUID,
        "not_after": (utc_now() + timedelta(seconds=5)).isoformat(),
    }
    if params is not None:
        body["params"] = params
    return decode_command(json.dumps(body).encode(), None, utc_now())


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("snapshot_create", None),  # a snapshot needs its name
        ("snapshot_create", {"name": ""}),
        ("snapshot_create", {"name": "../etc"}),
        ("snapshot_create", {"name": "a" * 65}),
        ("snapshot_create", {"name": "s", "description": "x" * 1025}),
        ("snapshot_create", {"name": "s", "force_after": True}),  # a lifecycle param
        ("snapshot_revert", {"name": "s", "memory": True}),  # a create param
        ("snapshot_delete", {}),
        ("start", {"name": "s"}),
    ],
)
def test_params_are_validated_for_their_action(action: str, params: object) -> None:
    decoded = _decode(action, params)
    assert isinstance(decoded, Rejection) and decoded.code == "bad_request", decoded


def test_snapshot_params_round_trip_on_the_wire() -> None:
    decoded = _decode("snapshot_create", {"name": "pre-2.0", "memory": False})
    assert isinstance(decoded, CommandRequest)
    again = CommandRequest.model_validate_json(dump(decoded))
    assert again.params == decoded.params and again.action == "snapshot_create"


def test_a_plain_set_cannot_name_a_snapshot_action() -> None:
    decoded = decode_set(b"SNAPSHOT_DELETE", UUID, "set-1", utc_now())
    assert isinstance(decoded, Rejection) and decoded.code == "unknown_action"


def test_the_create_xml_escapes_what_it_quotes_and_saves_memory_only_when_asked() -> None:
    order = SnapshotOrder("snapshot_create", "s1", "<b>&", memory=True)
    assert "<description>&lt;b&gt;&amp;</description>" in create_xml(order, active=True)
    assert "<memory snapshot='internal'/>" in create_xml(order, active=True)
    no_memory = SnapshotOrder("snapshot_create", "s1", memory=False)
    assert "<memory snapshot='no'/>" in create_xml(no_memory, active=True)
    assert "<memory" not in create_xml(order, active=False)  # a stopped VM has none


def test_a_snapshot_record_reads_libvirt_s_xml() -> None:
    xml = (
        "<domainsnapshot><name>s2</name><description>d</description><state>shutoff</state>"
        "<parent><name>s1</name></parent><creationTime>1700000000</creationTime>"
        "<memory snapshot='no'/></domainsnapshot>"
    )
    record = _record(xml, current="s2")
    assert (record.name, record.state, record.parent, record.created) == (
        "s2",
        "stopped",
        "s1",
        1700000000,
    )
    assert record.current and not record.has_memory
    running = "<domainsnapshot><name>s3</name><state>running</state></domainsnapshot>"
    assert _record(running, current=None).has_memory
