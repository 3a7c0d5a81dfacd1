"""Turns one domain's `getAllDomainStats` record (a flat dict) into a RawSample (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class BalloonStats:
    """What libvirt reports of a guest's memory, in KiB (balloon.* and rss), seconds for time."""

    current_kib: int | None = None
    available_kib: int | None = None
    usable_kib: int | None = None
    last_update_s: int | None = None
    rss_kib: int | None = None


@dataclass(frozen=True)
class BlockCounters:
    device: str
    read_bytes: int
    write_bytes: int
    read_reqs: int
    write_reqs: int


@dataclass(frozen=True)
class NetCounters:
    interface: str
    rx_bytes: int
    tx_bytes: int
    rx_errors: int = 0
    tx_errors: int = 0
    rx_drops: int = 0
    tx_drops: int = 0
    rx_packets: int | None = None
    tx_packets: int | None = None


@dataclass(frozen=True)
class RawSample:
    """One domain's counters at one instant, as libvirt gave them (None: not reported)."""

    uuid: str
    name: str
    state: int
    reason: int
    taken_ns: int
    cpu_time_ns: int | None = None
    vcpus: int | None = None
    max_memory_kib: int | None = None
    balloon: BalloonStats = field(default_factory=BalloonStats)
    blocks: tuple[BlockCounters, ...] = ()
    nets: tuple[NetCounters, ...] = ()
    stale: bool = False
    # A device was named without its counters: libvirt leaves out what needs the domain's job
    # (block statistics) when the bulk call may not wait for it (NOWAIT) and the job is busy.
    partial: bool = False

    def with_fallback(self, **changes: Any) -> RawSample:
        return replace(self, **changes)


def _int(stats: dict[str, Any], key: str) -> int | None:
    value = stats.get(key)
    return int(value) if isinstance(value, int | float) else None


def _blocks(stats: dict[str, Any]) -> tuple[tuple[BlockCounters, ...], bool]:
    """The block devices' counters, and whether a device was named without them."""
    blocks = []
    partial = False
    for i in range(_int(stats, "block.count") or 0):
        dev = stats.get(f"block.{i}.name")
        if not isinstance(dev, str):
            continue
        read, written = _int(stats, f"block.{i}.rd.bytes"), _int(stats, f"block.{i}.wr.bytes")
        if read is None and written is None:
            # Not read this time, which is not zero: a zero would show the lifetime counter
            # as one tick's rate on the next sample, and exported counters would go backwards.
            partial = True
            continue
        blocks.append(
            BlockCounters(
                dev,
                read or 0,
                written or 0,
                _int(stats, f"block.{i}.rd.reqs") or 0,
                _int(stats, f"block.{i}.wr.reqs") or 0,
            )
        )
    return tuple(blocks), partial


def _nets(stats: dict[str, Any]) -> tuple[NetCounters, ...]:
    nets = []
    for i in range(_int(stats, "net.count") or 0):
        ifname = stats.get(f"net.{i}.name")
        if not isinstance(ifname, str):
            continue
        nets.append(
            NetCounters(
                ifname,
                _int(stats, f"net.{i}.rx.bytes") or 0,
                _int(stats, f"net.{i}.tx.bytes") or 0,
                _int(stats, f"net.{i}.rx.errs") or 0,
                _int(stats, f"net.{i}.tx.errs") or 0,
                _int(stats, f"net.{i}.rx.drop") or 0,
                _int(stats, f"net.{i}.tx.drop") or 0,
                rx_packets=_int(stats, f"net.{i}.rx.pkts"),
                tx_packets=_int(stats, f"net.{i}.tx.pkts"),
            )
        )
    return tuple(nets)


def parse_record(uuid: str, name: str, stats: dict[str, Any], taken_ns: int) -> RawSample:
    """Reads the keys libvirt documents for the state, cpu, vcpu, balloon, block, net groups."""
    blocks, partial = _blocks(stats)
    balloon = BalloonStats(
        current_kib=_int(stats, "balloon.current"),
        available_kib=_int(stats, "balloon.available"),
        usable_kib=_int(stats, "balloon.usable"),
        last_update_s=_int(stats, "balloon.last-update"),
        rss_kib=_int(stats, "balloon.rss"),
    )
    return RawSample(
        uuid=uuid,
        name=name,
        state=_int(stats, "state.state") or 0,
        reason=_int(stats, "state.reason") or 0,
        taken_ns=taken_ns,
        cpu_time_ns=_int(stats, "cpu.time"),
        vcpus=_int(stats, "vcpu.current"),
        max_memory_kib=_int(stats, "balloon.maximum"),
        balloon=balloon,
        blocks=blocks,
        nets=_nets(stats),
        partial=partial,
    )
