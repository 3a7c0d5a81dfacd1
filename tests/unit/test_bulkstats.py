"""`getAllDomainStats` records → RawSample, for a QEMU guest and for the test driver."""

from __future__ import annotations

from typing import Any

import pytest

from agent.hypervisor.bulkstats import (
    BalloonStats,
    BlockCounters,
    NetCounters,
    RawSample,
    parse_record,
)

pytestmark = pytest.mark.unit

U = "0f1e2d3c-4b5a-4968-8776-655443322110"

# What libvirt's QEMU driver returns for a running guest (keys as documented for
# virConnectGetAllDomainStats; a few the agent does not read are kept for realism).
QEMU_RECORD: dict[str, Any] = {
    "state.state": 1,
    "state.reason": 1,
    "cpu.time": 123_456_789_000,
    "cpu.user": 100_000_000_000,
    "cpu.system": 20_000_000_000,
    "vcpu.current": 2,
    "vcpu.maximum": 4,
    "vcpu.0.state": 1,
    "vcpu.0.time": 60_000_000_000,
    "balloon.current": 2_097_152,
    "balloon.maximum": 4_194_304,
    "balloon.swap_in": 0,
    "balloon.unused": 1_048_576,
    "balloon.available": 2_000_000,
    "balloon.usable": 1_500_000,
    "balloon.last-update": 1_700_000_000,
    "balloon.rss": 1_900_000,
    "block.count": 2,
    "block.0.name": "vda",
    "block.0.path": "/var/lib/libvirt/images/web.qcow2",
    "block.0.rd.reqs": 1_000,
    "block.0.rd.bytes": 40_960_000,
    "block.0.rd.times": 5_000_000,
    "block.0.wr.reqs": 500,
    "block.0.wr.bytes": 20_480_000,
    "block.0.fl.reqs": 10,
    "block.0.allocation": 1_000_000,
    "block.0.capacity": 10_737_418_240,
    "block.1.name": "sda",
    "block.1.rd.reqs": 7,
    "block.1.rd.bytes": 28_672,
    "net.count": 1,
    "net.0.name": "vnet3",
    "net.0.rx.bytes": 987_654,
    "net.0.rx.pkts": 1_000,
    "net.0.rx.errs": 2,
    "net.0.rx.drop": 3,
    "net.0.tx.bytes": 123_456,
    "net.0.tx.pkts": 900,
    "net.0.tx.errs": 4,
    "net.0.tx.drop": 5,
}


def test_qemu_record() -> None:
    raw = parse_record(U, "web 01", QEMU_RECORD, taken_ns=42)
    assert (raw.uuid, raw.name, raw.taken_ns) == (U, "web 01", 42)
    assert (raw.state, raw.reason) == (1, 1)
    assert raw.cpu_time_ns == 123_456_789_000
    assert raw.vcpus == 2
    assert raw.max_memory_kib == 4_194_304
    assert raw.balloon == BalloonStats(
        current_kib=2_097_152,
        available_kib=2_000_000,
        usable_kib=1_500_000,
        last_update_s=1_700_000_000,
        rss_kib=1_900_000,
    )
    assert raw.blocks == (
        BlockCounters(
            "vda", read_bytes=40_960_000, write_bytes=20_480_000, read_reqs=1_000, write_reqs=500
        ),
        BlockCounters("sda", read_bytes=28_672, write_bytes=0, read_reqs=7, write_reqs=0),
    )
    assert raw.nets == (
        NetCounters(
            "vnet3",
            rx_bytes=987_654,
            tx_bytes=123_456,
            rx_errors=2,
            tx_errors=4,
            rx_drops=3,
            tx_drops=5,
            rx_packets=1_000,
            tx_packets=900,
        ),
    )
    assert raw.stale is False


def test_test_driver_record_has_only_state() -> None:
    raw = parse_record(U, "test", {"state.state": 5, "state.reason": 2}, taken_ns=7)
    assert (raw.state, raw.reason) == (5, 2)
    assert raw.cpu_time_ns is None
    assert raw.vcpus is None
    assert raw.max_memory_kib is None
    assert raw.balloon == BalloonStats()
    assert raw.blocks == ()
    assert raw.nets == ()
    assert raw.stale is False


def test_empty_record() -> None:
    raw = parse_record(U, "x", {}, taken_ns=0)
    assert (raw.state, raw.reason) == (0, 0)


def test_device_without_a_name_is_skipped() -> None:
    record = {
        "block.count": 2,
        "block.1.name": "vdb",
        "block.1.rd.bytes": 5,
        "net.count": 2,
        "net.0.name": "vnet0",
        "net.1.rx.bytes": 9,
    }
    raw = parse_record(U, "x", record, taken_ns=0)
    assert [b.device for b in raw.blocks] == ["vdb"]
    assert raw.blocks[0].read_bytes == 5
    assert [n.interface for n in raw.nets] == ["vnet0"]


def test_non_numeric_values_read_as_missing() -> None:
    raw = parse_record(U, "x", {"cpu.time": "lots", "vcpu.current": None}, taken_ns=0)
    assert raw.cpu_time_ns is None
    assert raw.vcpus is None


def test_with_fallback_changes_only_what_is_given() -> None:
    raw = parse_record(U, "web", QEMU_RECORD, taken_ns=1)
    stale = raw.with_fallback(stale=True)
    assert isinstance(stale, RawSample)
    assert stale.stale is True
    assert stale.cpu_time_ns == raw.cpu_time_ns
    assert raw.stale is False


def test_a_disk_named_without_its_counters_is_left_out_not_zero() -> None:
    # libvirt with NOWAIT and the domain's job busy: the disk is named, its counters are not.
    record = {**QEMU_RECORD}
    for key in [k for k in record if k.startswith("block.0.") and k != "block.0.name"]:
        del record[key]
    raw = parse_record(U, "web", record, taken_ns=0)
    assert raw.partial
    assert [b.device for b in raw.blocks] == ["sda"]
    assert not parse_record(U, "web", QEMU_RECORD, taken_ns=0).partial


class _Dom:
    def UUIDString(self) -> str:
        return U

    def name(self) -> str:
        return "web"


class _Conn:
    """What a QEMU connection's bulk call returns while the guest's job is busy."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def getType(self) -> str:
        return "QEMU"

    def getAllDomainStats(self, _groups: int, _flags: int) -> list[tuple[_Dom, dict[str, Any]]]:
        return [(_Dom(), self.record)]


def test_a_running_guest_whose_disks_were_not_read_is_reported_stale() -> None:
    from agent.hypervisor.stats import BulkSampler

    busy = {k: v for k, v in QEMU_RECORD.items() if not k.startswith(("block.0.rd", "block.0.wr"))}
    sampler = BulkSampler()
    conn = _Conn(busy)
    sampler.connected(conn)
    [raw] = sampler.sample(conn)
    assert raw.stale and [b.device for b in raw.blocks] == ["sda"]
    conn.record = QEMU_RECORD
    [raw] = sampler.sample(conn)
    assert not raw.stale and len(raw.blocks) == 2
