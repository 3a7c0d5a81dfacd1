"""Payload models (SPEC §3): wire round-trips, `v`/`ts`, forward compatibility, validation."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from shared.messages import (
    CommandParams,
    CommandReply,
    CommandRequest,
    DiskIO,
    ErrorInfo,
    GatewayStatus,
    HostMetrics,
    HostStatus,
    Hypervisor,
    Message,
    MetricsBatch,
    NetIO,
    NodeInfo,
    VmEvent,
    VmMetrics,
    VmState,
    as_dict,
    dump,
)

pytestmark = pytest.mark.unit

U = "0f1e2d3c-4b5a-4968-8776-655443322110"
# Millisecond precision: what the wire carries, so a round trip is exact.
TS = datetime(2026, 11, 26, 17, 52, 55, 123000, tzinfo=UTC)
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def vm_metrics(**kw: Any) -> VmMetrics:
    base: dict[str, Any] = dict(
        host="kvm1",
        uuid=U,
        name="web 01",
        state="running",
        cpu_percent=12.5,
        vcpus=2,
        memory_percent=25.0,
        memory_used_mb=512.0,
        memory_total_mb=2048.0,
        memory_source="guest",
        disk_io=[
            DiskIO(
                device="vda",
                read_bytes=10,
                write_bytes=20,
                read_bps=1.5,
                write_bps=2.5,
                read_iops=0.5,
                write_iops=0.25,
            )
        ],
        network_io=[
            NetIO(
                interface="vnet0",
                rx_bytes=1,
                tx_bytes=2,
                rx_bps=3.0,
                tx_bps=4.0,
                rx_errors=1,
                tx_errors=2,
                rx_drops=3,
                tx_drops=4,
            )
        ],
        interval_s=2.0,
        ts=TS,
    )
    base.update(kw)
    return VmMetrics(**base)


MODELS: list[Message] = [
    HostStatus(
        host="kvm1",
        online=True,
        agent_version="1.0.0",
        libvirt_connected=True,
        libvirt_uri="qemu:///system",
        hypervisor=Hypervisor(type="QEMU", version="8.2.0"),
        node=NodeInfo(cpus=8, memory_mb=32000, model="x86_64"),
        interval_s=2.0,
        started_at=TS - timedelta(hours=1),
        ts=TS,
    ),
    HostStatus(host="kvm1", online=False, ts=TS),
    VmState(
        host="kvm1",
        uuid=U,
        name="db 🐘 #1",
        state="shutting_down",
        reason="user",
        is_active=True,
        vcpus=4,
        memory_mb=4096,
        max_memory_mb=8192,
        autostart=True,
        persistent=False,
        seq=1_700_000_000_000_001,
        ts=TS,
    ),
    vm_metrics(),
    vm_metrics(
        cpu_percent=None,
        memory_percent=None,
        memory_used_mb=None,
        memory_source="none",
        stale=True,
        disk_io=[],
        network_io=[],
    ),
    MetricsBatch(
        host="kvm1",
        interval_s=2.0,
        tick=42,
        host_metrics=HostMetrics(
            cpu_percent=3.5,
            cpus=8,
            memory_total_mb=32000,
            memory_free_mb=1000,
            vms_total=3,
            vms_running=2,
            vcpus_allocated=6,
            memory_allocated_mb=6144,
        ),
        vms=[vm_metrics()],
        ts=TS,
    ),
    VmEvent(
        host="kvm1",
        kind="lifecycle",
        uuid=U,
        name="web",
        event="started",
        detail="booted",
        state="running",
        ts=TS,
    ),
    VmEvent(
        host="kvm1",
        kind="command",
        uuid=U,
        event="command",
        id="r1",
        action="shutdown",
        status="failed",
        by="alice",
        error=ErrorInfo(code="timeout", message="slow"),
        ts=TS,
    ),
    CommandRequest(
        id="r1",
        action="shutdown",
        vm=U,
        params=CommandParams(timeout_s=30, force_after=True),
        not_after=TS + timedelta(seconds=30),
        by="alice",
        ts=TS,
    ),
    CommandReply(
        id="r1",
        host="kvm1",
        status="succeeded",
        action="start",
        vm=U,
        name="web",
        state="running",
        changed=False,
        ts=TS,
    ),
    CommandReply(
        id=None,
        host="kvm1",
        status="rejected",
        error=ErrorInfo(code="bad_request", message="nope"),
        ts=TS,
    ),
    GatewayStatus(gateway="gw1", online=True, version="1.0.0", ts=TS),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_round_trip(model: Message) -> None:
    wire = model.model_dump_json()
    back = type(model).model_validate_json(wire)
    assert back == model
    assert back.model_dump_json() == wire
    assert type(model).model_validate_json(dump(model)) == model


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_every_payload_has_v1_and_iso_utc_ts(model: Message) -> None:
    data = json.loads(model.model_dump_json())
    assert data["v"] == 1
    assert ISO_Z.match(data["ts"]), data["ts"]
    assert data["ts"] == "2026-11-26T17:52:55.123Z"
    assert as_dict(model) == data


def test_default_ts_is_now_in_utc() -> None:
    before = datetime.now(UTC)
    status = HostStatus(host="kvm1", online=True)
    after = datetime.now(UTC)
    assert status.ts.tzinfo is not None
    assert status.ts.utcoffset() == timedelta(0)
    assert before <= status.ts <= after
    assert ISO_Z.match(json.loads(status.model_dump_json())["ts"])


def test_naive_datetimes_are_taken_as_utc() -> None:
    msg = GatewayStatus(gateway="gw", online=True, ts=datetime(2026, 1, 2, 3, 4, 5))
    assert msg.ts == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    parsed = GatewayStatus.model_validate_json(
        '{"v":1,"gateway":"gw","online":true,"ts":"2026-01-02T03:04:05"}'
    )
    assert parsed.ts == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_other_offsets_are_converted_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    msg = GatewayStatus(gateway="gw", online=True, ts=datetime(2026, 1, 2, 12, 0, tzinfo=plus2))
    assert json.loads(msg.model_dump_json())["ts"] == "2026-01-02T10:00:00.000Z"
    parsed = CommandRequest.model_validate_json(
        '{"id":"r","action":"start","vm":"x","not_after":"2026-01-02T12:00:00+02:00"}'
    )
    assert parsed.not_after == datetime(2026, 1, 2, 10, 0, tzinfo=UTC)


def test_will_payload_without_ts_parses() -> None:
    will = HostStatus.model_validate_json('{"v":1,"host":"x","online":false}')
    assert will.host == "x"
    assert will.online is False
    assert will.ts.tzinfo is not None
    assert will.agent_version is None
    assert will.libvirt_connected is None


def test_extra_fields_are_ignored() -> None:
    state = VmState.model_validate_json(
        json.dumps(
            {
                "v": 1,
                "ts": "2026-01-01T00:00:00Z",
                "host": "h",
                "uuid": U,
                "name": "n",
                "state": "running",
                "reason": "booted",
                "is_active": True,
                "vcpus": 1,
                "memory_mb": 512,
                "max_memory_mb": 512,
                "autostart": False,
                "persistent": True,
                "seq": 3,
                "added_in_v1_1": {"nested": [1, 2]},
                "numa": 2,
            }
        )
    )
    assert state.seq == 3
    assert not hasattr(state, "numa")
    reply = CommandReply.model_validate_json(
        '{"v":1,"id":"r","host":"h","status":"accepted","progress":0.5,'
        '"error":{"code":"c","message":"m","hint":"x"}}'
    )
    assert reply.status == "accepted"
    assert reply.error == ErrorInfo(code="c", message="m")
    batch = MetricsBatch.model_validate_json(
        '{"host":"h","interval_s":2,"tick":1,"vms":[],"host_metrics":{"gpus":1}}'
    )
    assert batch.host_metrics == HostMetrics()


def test_metrics_of_an_agent_without_the_cumulative_counters_still_validate() -> None:
    """`cpu_time_s`, `read_reqs`/`write_reqs` and `rx_packets`/`tx_packets` came later: a
    payload without them is valid and reads them as unknown (None), not as zero."""
    old = json.loads(vm_metrics().model_dump_json())
    del old["cpu_time_s"]
    for disk in old["disk_io"]:
        del disk["read_reqs"], disk["write_reqs"]
    for nic in old["network_io"]:
        del nic["rx_packets"], nic["tx_packets"]
    m = VmMetrics.model_validate_json(json.dumps(old))
    assert m.cpu_time_s is None
    assert (m.disk_io[0].read_reqs, m.disk_io[0].write_reqs) == (None, None)
    assert (m.network_io[0].rx_packets, m.network_io[0].tx_packets) == (None, None)
    new = vm_metrics(cpu_time_s=1.5)
    assert VmMetrics.model_validate_json(new.model_dump_json()).cpu_time_s == 1.5


def test_models_are_frozen() -> None:
    status = HostStatus(host="kvm1", online=True)
    with pytest.raises(ValidationError) as info:
        status.online = False  # type: ignore[misc]
    assert [(e["type"], e["loc"]) for e in info.value.errors()] == [
        ("frozen_instance", ("online",))
    ]


def test_command_defaults() -> None:
    req = CommandRequest.model_validate_json(
        '{"id":"r1","action":"shutdown","vm":"u","not_after":"2026-01-02T10:00:00Z"}'
    )
    assert req.params.timeout_s == 60.0
    assert req.params.force_after is False
    assert req.by == "unknown"


def test_a_command_without_not_after_is_invalid() -> None:
    with pytest.raises(ValidationError, match="not_after") as info:
        CommandRequest.model_validate_json('{"id":"r1","action":"shutdown","vm":"u"}')
    assert [(e["type"], e["loc"]) for e in info.value.errors()] == [("missing", ("not_after",))]


def test_reply_finality() -> None:
    assert not CommandReply(id="r", host="h", status="accepted").is_final
    for status in ("succeeded", "failed", "rejected", "timed_out"):
        assert CommandReply(id="r", host="h", status=status).is_final


GOOD_CMD = {"v": 1, "id": "r1", "action": "start", "vm": U, "not_after": "2026-01-02T10:00:00Z"}


# (model, payload, the error locations: the fields at fault)
INVALID_PAYLOADS: list[tuple[type[BaseModel], dict[str, Any], list[tuple[str | int, ...]]]] = [
    (CommandRequest, {**GOOD_CMD, "action": "explode"}, [("action",)]),
    (CommandRequest, {**GOOD_CMD, "action": "START"}, [("action",)]),
    (CommandRequest, {**GOOD_CMD, "id": ""}, [("id",)]),
    (CommandRequest, {**GOOD_CMD, "id": "   "}, [("id",)]),
    (CommandRequest, {**GOOD_CMD, "id": "x" * 129}, [("id",)]),
    (CommandRequest, {**GOOD_CMD, "id": 5}, [("id",)]),
    (CommandRequest, {**GOOD_CMD, "vm": None}, [("vm",)]),
    (CommandRequest, {k: v for k, v in GOOD_CMD.items() if k != "vm"}, [("vm",)]),
    (CommandRequest, {**GOOD_CMD, "params": {"timeout_s": 0}}, [("params", "timeout_s")]),
    (CommandRequest, {**GOOD_CMD, "params": {"timeout_s": -5}}, [("params", "timeout_s")]),
    (CommandRequest, {**GOOD_CMD, "params": {"timeout_s": 3601}}, [("params", "timeout_s")]),
    (CommandRequest, {**GOOD_CMD, "params": {"timeout_s": "soon"}}, [("params", "timeout_s")]),
    (CommandRequest, {**GOOD_CMD, "params": "fast"}, [("params",)]),
    (CommandRequest, {**GOOD_CMD, "not_after": "tomorrow"}, [("not_after",)]),
    (CommandRequest, {**GOOD_CMD, "v": 2}, [("v",)]),
    (CommandRequest, {**GOOD_CMD, "ts": "yesterday"}, [("ts",)]),
    (HostStatus, {"v": 1, "host": "h", "online": "maybe"}, [("online",)]),
    (HostStatus, {"v": 1, "online": False}, [("host",)]),
    (
        VmState,
        {
            "v": 1,
            "host": "h",
            "uuid": U,
            "name": "n",
            "state": "sleeping",
            "reason": "r",
            "is_active": True,
            "vcpus": 1,
            "memory_mb": 1,
            "max_memory_mb": 1,
            "autostart": False,
            "persistent": True,
            "seq": 1,
        },
        [("state",)],
    ),
    (
        VmState,
        {
            "v": 1,
            "host": "h",
            "uuid": U,
            "name": "n",
            "state": "running",
            "reason": "r",
            "is_active": True,
            "vcpus": "two",
            "memory_mb": 1,
            "max_memory_mb": 1,
            "autostart": False,
            "persistent": True,
            "seq": 1,
        },
        [("vcpus",)],
    ),
    (
        VmMetrics,
        {
            "host": "h",
            "uuid": U,
            "name": "n",
            "state": "running",
            "vcpus": 1,
            "memory_source": "swap",
        },
        [("memory_source",)],
    ),
    (
        VmMetrics,
        {
            "host": "h",
            "uuid": U,
            "name": "n",
            "state": "running",
            "vcpus": 1,
            "disk_io": [{"device": "vda"}],
        },
        [("disk_io", 0, "read_bytes"), ("disk_io", 0, "write_bytes")],
    ),
    (CommandReply, {"id": "r", "host": "h", "status": "done"}, [("status",)]),
    (VmEvent, {"host": "h", "kind": "gossip", "event": "x"}, [("kind",)]),
]


@pytest.mark.parametrize(
    ("model", "payload", "fields"),
    INVALID_PAYLOADS,
    # The ids the cases had before their fields were named.
    ids=[f"{m.__name__}-payload{i}" for i, (m, _, _) in enumerate(INVALID_PAYLOADS)],
)
def test_invalid_payloads_raise(
    model: type[BaseModel], payload: dict[str, Any], fields: list[tuple[str | int, ...]]
) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(json.dumps(payload))
    assert [e["loc"] for e in info.value.errors()] == fields


@pytest.mark.parametrize("text", ["", "not json", "[]", "null", '{"id":', '"a string"'])
def test_non_object_payloads_raise(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        CommandRequest.model_validate_json(text)
    # No field is at fault: the payload as a whole is not JSON, or not an object.
    assert [e["loc"] for e in info.value.errors()] == [()]
    assert info.value.errors()[0]["type"] in ("json_invalid", "model_type")
