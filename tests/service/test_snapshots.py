"""Snapshot commands against libvirt's test driver: what they do, what they refuse, their
deadlines (held across one, never acted on late), and the retained list an agent publishes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from agent.commands.settings import ExecutorSettings
from agent.hypervisor import SnapshotRecord
from shared.messages import CommandReply
from tests.support.agentctl import AgentClient
from tests.support.executor import Gate, LiveExecutor
from tests.support.mqtt import Recorder
from tests.support.testdriver import TestDriverDaemon

pytestmark = pytest.mark.service

VM = "c0000000-0000-4000-8000-000000000001"  # qcow2, running, its disk in pool `images`
OFF = "c0000000-0000-4000-8000-000000000002"  # qcow2, stopped
RAW = "c0000000-0000-4000-8000-000000000003"  # a raw disk
EFI = "c0000000-0000-4000-8000-000000000004"  # UEFI firmware in pflash
FULL = "c0000000-0000-4000-8000-000000000005"  # its pool has 100 MiB free


def _domain(name: str, uuid: str, disk: str, fmt: str, extra: str = "", os: str = "") -> str:
    return (
        f"<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
        f"<name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>1024</memory><vcpu>1</vcpu>"
        f"<os><type>hvm</type>{os}</os><devices><disk type='file' device='disk'>"
        f"<driver name='qemu' type='{fmt}'/><source file='{disk}'/>"
        f"<target dev='vda' bus='virtio'/></disk></devices>{extra}</domain>"
    )


def _pool(name: str, uuid: str, volume: str, allocation_mib: int) -> str:
    return (
        f"<pool type='dir'><name>{name}</name><uuid>{uuid}</uuid>"
        f"<target><path>/{name}</path></target><volume type='file'><name>{volume}</name>"
        f"<capacity unit='GiB'>10</capacity><allocation unit='MiB'>{allocation_mib}</allocation>"
        f"<target><format type='qcow2'/></target></volume></pool>"
    )


# The driver's pools hold 100 GiB: `full` is left 100 MiB, less than a 1 GiB guest's memory.
NODE = (
    "<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads>"
    "<active>4</active><mhz>2400</mhz><model>snap</model></cpu><memory>16777216</memory>"
    + _domain("snap-vm", VM, "/images/snap.qcow2", "qcow2")
    + _domain("off-vm", OFF, "/images/off.qcow2", "qcow2", "<test:runstate>5</test:runstate>")
    + _domain("raw-vm", RAW, "/images/raw.img", "raw")
    + _domain(
        "efi-vm",
        EFI,
        "/images/efi.qcow2",
        "qcow2",
        os="<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>",
    )
    + _domain("full-vm", FULL, "/full/full.qcow2", "qcow2")
    + _pool("images", "c1000000-0000-4000-8000-000000000001", "snap.qcow2", 1024)
    + _pool("full", "c1000000-0000-4000-8000-000000000002", "full.qcow2", 102300)
    + "</node>"
)


@pytest.fixture
def node(tmp_path: Path) -> Path:
    path = tmp_path / "snapshots-node.xml"
    path.write_text(NODE)
    return path


class Live(LiveExecutor):
    """The executor on the test's node, numbering its requests, noting snapshot re-reads."""

    def __init__(self, uri: str, max_snapshots: int = 20, call_timeout: float = 30.0) -> None:
        self.reread: list[str] = []
        settings = ExecutorSettings(call_timeout=call_timeout, max_snapshots=max_snapshots)
        super().__init__(uri, settings, on_snapshots=self.reread.append)
        self._n = 0

    def submit(self, action: str, vm: str, begin_within: float = 5, **params: object) -> str:
        return self.submit_params(action, vm, begin_within, params)

    def submit_params(
        self, action: str, vm: str, begin_within: float, params: dict[str, object]
    ) -> str:
        self._n += 1
        self.request(f"c{self._n}", action, vm, begin_within, params)
        return f"c{self._n}"

    def call(self, action: str, vm: str, **params: object) -> CommandReply:
        return self.final(self.submit_params(action, vm, 5, params))

    def snapshots(self, vm: str) -> list[SnapshotRecord]:
        return self.hv.snapshots(vm)


@pytest.fixture
def live(node: Path) -> Iterator[Callable[..., Live]]:
    made: list[Live] = []

    def make(**kw: Any) -> Live:
        made.append(Live(f"test://{node}", **kw))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_take_a_snapshot_with_memory_go_back_to_it_and_delete_it(
    live: Callable[..., Live],
) -> None:
    lv = live()
    reply = lv.call("snapshot_create", VM, name="pre-upgrade", description="before 2.0")
    assert (reply.status, reply.state, reply.changed) == ("succeeded", "running", True)
    [snap] = lv.snapshots(VM)
    assert (snap.name, snap.description, snap.state) == ("pre-upgrade", "before 2.0", "running")
    assert snap.has_memory and snap.current and snap.parent is None
    assert abs(snap.created - time.time()) < 60

    lv.hv.perform(VM, "destroy")  # the upgrade went wrong
    reply = lv.call("snapshot_revert", VM, name="pre-upgrade")
    assert (reply.status, reply.state) == ("succeeded", "running")  # its memory came back

    later = lv.call("snapshot_create", VM, name="after", memory=False)
    assert later.status == "succeeded"
    names = {s.name: s for s in lv.snapshots(VM)}
    assert names["after"].parent == "pre-upgrade" and names["after"].current

    assert lv.call("snapshot_delete", VM, name="pre-upgrade").status == "succeeded"
    assert [s.name for s in lv.snapshots(VM)] == ["after"]
    # Each job asks for the re-read on its own thread, after its reply may be out.
    deadline = time.monotonic() + 10
    while len(lv.reread) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lv.reread == [VM] * 4


def test_a_stopped_vm_s_snapshot_has_no_memory(live: Callable[..., Live]) -> None:
    lv = live()
    reply = lv.call("snapshot_create", OFF, name="cold")
    assert (reply.status, reply.state) == ("succeeded", "stopped")
    [snap] = lv.snapshots(OFF)
    assert snap.state == "stopped" and not snap.has_memory


@pytest.mark.parametrize(
    ("action", "vm", "name", "code"),
    [
        ("snapshot_create", RAW, "s", "snapshot_raw_disk"),
        ("snapshot_create", EFI, "s", "snapshot_firmware_unsupported"),
        ("snapshot_create", FULL, "s", "snapshot_no_space"),
        ("snapshot_revert", VM, "nope", "snapshot_not_found"),
        ("snapshot_delete", VM, "nope", "snapshot_not_found"),
    ],
)
def test_what_cannot_work_is_refused_with_its_own_code(
    live: Callable[..., Live], action: str, vm: str, name: str, code: str
) -> None:
    lv = live()
    gate = Gate("never")
    lv.hv.hold = gate
    reply = lv.call(action, vm, name=name)
    assert reply.status == "failed" and reply.error is not None
    assert reply.error.code == code, reply
    assert "act" not in gate.passed  # refused from what libvirt said, before the action
    lv.executor.close_workers(wait=True)
    assert lv.snapshots(vm) == [] and lv.reread == []


def test_a_name_that_exists_and_the_limit_are_refused_and_nothing_is_deleted(
    live: Callable[..., Live],
) -> None:
    lv = live(max_snapshots=2)
    assert lv.call("snapshot_create", VM, name="one").status == "succeeded"
    taken = lv.call("snapshot_create", VM, name="one")
    assert taken.error is not None and taken.error.code == "snapshot_exists"
    assert lv.call("snapshot_create", VM, name="two").status == "succeeded"
    full = lv.call("snapshot_create", VM, name="three")
    assert full.status == "failed" and full.error is not None
    assert (
        full.error.code == "snapshot_limit" and "KVMSUP_SNAPSHOTS_MAX_PER_VM" in full.error.message
    )
    assert [s.name for s in lv.snapshots(VM)] == ["one", "two"]


# -- the deadline: the same guarantees as the lifecycle commands -----------------------------


@pytest.mark.parametrize(
    ("action", "name"),
    [("snapshot_create", "late"), ("snapshot_revert", "base"), ("snapshot_delete", "base")],
)
def test_a_snapshot_action_held_at_its_start_past_the_deadline_is_never_sent(
    live: Callable[..., Live], action: str, name: str
) -> None:
    lv = live()
    assert lv.call("snapshot_create", VM, name="base").status == "succeeded"
    lv.hv.perform(VM, "suspend")  # a revert would leave it running: any change shows
    gate = Gate("act")
    lv.hv.hold = gate
    request_id = lv.submit(action, VM, begin_within=0.3, name=name)
    assert gate.reached.wait(10)
    reply = lv.final(request_id)
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "timeout", reply
    gate.release.set()
    lv.executor.close_workers(wait=True)  # every call that was running has returned
    assert "begun" not in gate.passed
    assert [s.name for s in lv.snapshots(VM)] == ["base"]
    assert lv.hv.domain_state(VM)[0] == libvirt.VIR_DOMAIN_PAUSED


def test_a_snapshot_whose_state_read_is_held_past_not_after_is_never_taken(
    live: Callable[..., Live],
) -> None:
    lv = live()
    gate = Gate("read")
    lv.hv.hold = gate
    request_id = lv.submit("snapshot_create", VM, begin_within=0.3, name="late")
    assert gate.reached.wait(10)
    reply = lv.final(request_id)
    assert reply.status == "timed_out" and reply.error is not None
    assert reply.error.code == "timeout"
    gate.release.set()
    lv.executor.close_workers(wait=True)
    assert "begun" not in gate.passed and lv.snapshots(VM) == []


def test_a_snapshot_begun_before_the_deadline_is_reported_done(
    live: Callable[..., Live],
) -> None:
    lv = live()
    gate = Gate("begun")
    lv.hv.hold = gate
    request_id = lv.submit("snapshot_create", VM, begin_within=0.3, name="in-time")
    assert gate.reached.wait(10)
    time.sleep(0.5)  # past not_after while the begun call is with libvirt
    gate.release.set()
    reply = lv.final(request_id)
    assert reply.status == "succeeded" and reply.changed is True
    assert [s.name for s in lv.snapshots(VM)] == ["in-time"]


# -- the agent: the retained list on MQTT --------------------------------------------------


def test_the_agent_publishes_each_vm_s_snapshots_retained_and_clears_them_with_the_vm(
    recorder: Recorder,
    start_agent: Callable[..., object],
    testdriver: TestDriverDaemon,
) -> None:
    # The driver's shared `default` node: a node file would be private to each connection,
    # and the test undefines the VM behind the agent's back.
    uri = f"test+unix:///default?socket={testdriver.socket}"
    conn = libvirt.open(uri)
    try:
        conn.defineXML(_domain("snap-vm", VM, "/images/snap.qcow2", "qcow2")).create()
        conn.defineXML(_domain("raw-vm", RAW, "/images/raw.img", "raw"))
        client = AgentClient(recorder, "snap-host")
        start_agent("snap-host", uri, KVMSUP_SNAPSHOTS_MAX_PER_VM="3")
        client.wait_state(VM, "running")
        topic = client.topics.vm_snapshots("snap-host", VM)
        first = recorder.wait_for(lambda m: m.topic == topic, 10)[-1]
        assert first.json()["snapshots"] == []  # every VM's list, after the resync

        reply = client.call("snapshot_create", VM, params={"name": "pre-upgrade"})
        assert reply["status"] == "succeeded", reply
        found = recorder.wait_for(lambda m: m.topic == topic and b"pre-upgrade" in m.payload, 10)
        body = found[-1].json()
        assert (body["host"], body["uuid"], body["name"]) == ("snap-host", VM, "snap-vm")
        [snap] = body["snapshots"]
        assert snap["name"] == "pre-upgrade" and snap["has_memory"] is True
        assert snap["current"] is True and snap["state"] == "running" and snap["parent"] is None

        refused = client.call("snapshot_create", RAW, params={"name": "x"})
        assert refused["status"] == "failed" and refused["error"]["code"] == "snapshot_raw_disk"
        audit = [e for e in client.events() if e.get("id") == refused["id"]]
        assert audit and audit[-1]["error"]["code"] == "snapshot_raw_disk"

        dom = conn.lookupByUUIDString(VM)
        dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        recorder.wait_for(lambda m: m.topic == topic and m.payload == b"", 10)
    finally:
        conn.close()
