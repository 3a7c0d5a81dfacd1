"""One tick: two successive raw samples → VM metrics, stale handling, host figures."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from agent.hypervisor import DomainInfo
from agent.hypervisor.bulkstats import BalloonStats, BlockCounters, NetCounters, RawSample
from agent.inventory import to_vm_state
from agent.tick.sampler import NodeReading, Sampler
from shared.messages import VmState

pytestmark = pytest.mark.unit

UA = "a0000000-0000-4000-8000-000000000001"
UB = "b0000000-0000-4000-8000-000000000002"
S = 1_000_000_000
NOW_S = 1_700_000_000.0
RUNNING, PAUSED, SHUTOFF = 1, 3, 5


def state(uuid: str = UA, st: int = RUNNING, vcpus: int = 2, memory_mb: int = 2048) -> VmState:
    return to_vm_state(
        "kvm1",
        DomainInfo(
            uuid=uuid,
            name="web",
            state=st,
            reason=1,
            vcpus=vcpus,
            memory_kib=memory_mb * 1024,
            max_memory_kib=memory_mb * 1024,
            autostart=False,
            persistent=True,
        ),
        seq=1,
    )


def raw(
    t_s: float,
    cpu_s: float | None,
    *,
    uuid: str = UA,
    st: int = RUNNING,
    rd: int = 0,
    wr: int = 0,
    rx: int = 0,
    tx: int = 0,
    **kw: Any,
) -> RawSample:
    base: dict[str, Any] = dict(
        uuid=uuid,
        name="web",
        state=st,
        reason=1,
        taken_ns=int(t_s * S),
        cpu_time_ns=None if cpu_s is None else int(cpu_s * S),
        vcpus=2,
        max_memory_kib=2048 * 1024,
        balloon=BalloonStats(
            current_kib=2048 * 1024,
            available_kib=2000 * 1024,  # MemTotal: the guest kernel keeps 48 MiB for itself
            usable_kib=1500 * 1024,
            last_update_s=int(NOW_S) - 2,
            rss_kib=1800 * 1024,
        ),
        blocks=(BlockCounters("vda", rd, wr, rd // 4096, wr // 4096),),
        nets=(
            NetCounters(
                "vnet0", rx, tx, rx_errors=1, tx_drops=2, rx_packets=rx // 100, tx_packets=tx // 100
            ),
        ),
    )
    base.update(kw)
    return RawSample(**base)


def test_first_tick_has_no_rates_and_no_cpu() -> None:
    sampler = Sampler("kvm1", memory_stats_period=5)
    [m] = sampler.vm_metrics([raw(100, 10)], {UA: state()}, now_s=NOW_S)
    assert m.cpu_percent is None
    assert m.interval_s is None
    assert m.disk_io[0].read_bps is None
    assert m.network_io[0].rx_bps is None
    assert m.stale is False


def test_two_ticks_give_cpu_rates_and_interval() -> None:
    sampler = Sampler("kvm1", memory_stats_period=5)
    known = {UA: state()}
    sampler.vm_metrics([raw(100, 10, rd=0, wr=0, rx=1_000, tx=0)], known, now_s=NOW_S)
    [m] = sampler.vm_metrics(
        [raw(102, 11, rd=819_200, wr=409_600, rx=5_000, tx=2_000)], known, now_s=NOW_S
    )
    assert (m.host, m.uuid, m.name, m.state) == ("kvm1", UA, "web", "running")
    assert m.interval_s == 2.0
    assert m.cpu_percent == 25.0  # 1 s of CPU over 2 s × 2 vCPUs
    disk = m.disk_io[0]
    assert (disk.device, disk.read_bytes, disk.write_bytes) == ("vda", 819_200, 409_600)
    assert disk.read_bps == 409_600.0
    assert disk.write_bps == 204_800.0
    assert disk.read_iops == 100.0  # 200 requests over 2 s
    assert disk.write_iops == 50.0
    net = m.network_io[0]
    assert (net.interface, net.rx_bytes, net.tx_bytes) == ("vnet0", 5_000, 2_000)
    assert (net.rx_bps, net.tx_bps) == (2_000.0, 1_000.0)
    assert (net.rx_errors, net.tx_drops) == (1, 2)
    # Guest memory view: MemTotal 2000 − MemAvailable 1500 MiB used, of the 2048 MiB VM.
    assert m.memory_source == "guest"
    assert m.memory_used_mb == 500
    assert m.memory_total_mb == 2048
    assert m.memory_percent == 25.0  # of what the guest has: 500 / 2000


def test_cumulative_counters_are_passed_on_for_prometheus() -> None:
    """CPU seconds, requests and packets as libvirt counts them, for counters that a scraper
    turns into rates itself."""
    sampler = Sampler("kvm1", memory_stats_period=5)
    [m] = sampler.vm_metrics([raw(100, 12.5, rd=819_200, rx=5_000, tx=2_000)], {UA: state()})
    assert m.cpu_time_s == 12.5
    assert (m.disk_io[0].read_reqs, m.disk_io[0].write_reqs) == (200, 0)
    assert (m.network_io[0].rx_packets, m.network_io[0].tx_packets) == (50, 20)
    # A stopped VM has no CPU time to report; a stale one none that can be trusted.
    [off] = Sampler("kvm1", 5).vm_metrics([raw(100, 3.0, st=SHUTOFF)], {UA: state(st=SHUTOFF)})
    assert off.cpu_time_s is None
    stale = RawSample(uuid=UA, name="web", state=RUNNING, reason=0, taken_ns=S, stale=True)
    assert Sampler("kvm1", 5).vm_metrics([stale], {UA: state()})[0].cpu_time_s is None


def test_guest_restart_gives_null_cpu_and_zero_rates() -> None:
    sampler = Sampler("kvm1", memory_stats_period=5)
    known = {UA: state()}
    sampler.vm_metrics([raw(100, 500, rd=10_000)], known, now_s=NOW_S)
    [m] = sampler.vm_metrics([raw(102, 1, rd=0)], known, now_s=NOW_S)
    assert m.cpu_percent is None
    assert m.disk_io[0].read_bps == 0.0


def test_stale_sample_is_flagged_and_not_the_baseline() -> None:
    sampler = Sampler("kvm1", memory_stats_period=5)
    known = {UA: state()}
    sampler.vm_metrics([raw(100, 10)], known, now_s=NOW_S)
    stale = RawSample(uuid=UA, name="web", state=RUNNING, reason=0, taken_ns=102 * S, stale=True)
    [m] = sampler.vm_metrics([stale], known, now_s=NOW_S)
    assert m.stale is True
    assert m.cpu_percent is None
    assert m.state == "running"
    assert m.vcpus == 2  # from the known state
    # The next good sample is measured against the last good one (t=100), not the stale one.
    [m] = sampler.vm_metrics([raw(104, 12)], known, now_s=NOW_S)
    assert m.stale is False
    assert m.interval_s == 4.0
    assert m.cpu_percent == 25.0


def test_stopped_vm_has_zero_cpu_and_no_memory_used() -> None:
    sampler = Sampler("kvm1", memory_stats_period=5)
    known = {UA: state(st=SHUTOFF)}
    off = raw(100, None, st=SHUTOFF, balloon=BalloonStats(), blocks=(), nets=())
    sampler.vm_metrics([off], known, now_s=NOW_S)
    [m] = sampler.vm_metrics(
        [raw(102, None, st=SHUTOFF, balloon=BalloonStats(), blocks=(), nets=())], known, now_s=NOW_S
    )
    assert m.state == "stopped"
    assert m.cpu_percent == 0.0
    assert m.memory_used_mb is None
    assert m.memory_percent is None
    assert m.memory_source == "none"
    assert m.memory_total_mb == 2048.0  # the configured size still shows


def test_stopped_vm_with_leftover_balloon_figures_shows_no_memory_used() -> None:
    sampler = Sampler("kvm1", memory_stats_period=5)
    [m] = sampler.vm_metrics([raw(100, None, st=SHUTOFF)], {UA: state(st=SHUTOFF)}, now_s=NOW_S)
    assert m.cpu_percent == 0.0
    assert m.memory_used_mb is None
    assert m.memory_source == "none"


def test_paused_vm_is_measured() -> None:
    sampler = Sampler("kvm1", memory_stats_period=5)
    known = {UA: state(st=PAUSED)}
    sampler.vm_metrics([raw(100, 10, st=PAUSED)], known, now_s=NOW_S)
    [m] = sampler.vm_metrics([raw(102, 10, st=PAUSED)], known, now_s=NOW_S)
    assert m.state == "paused"
    assert m.cpu_percent == 0.0
    assert m.memory_source == "guest"


def test_stale_balloon_uses_rss() -> None:
    sampler = Sampler("kvm1", memory_stats_period=5)
    old = BalloonStats(
        current_kib=2048 * 1024,
        usable_kib=1024 * 1024,
        last_update_s=int(NOW_S) - 3600,
        rss_kib=1024 * 1024,
    )
    [m] = sampler.vm_metrics([raw(100, 10, balloon=old)], {UA: state()}, now_s=NOW_S)
    assert m.memory_source == "rss"
    assert m.memory_used_mb == 1024.0
    assert m.memory_percent == 50.0


def test_vanished_vm_is_forgotten() -> None:
    sampler = Sampler("kvm1", memory_stats_period=5)
    known = {UA: state(), UB: state(UB)}
    sampler.vm_metrics([raw(100, 10), raw(100, 10, uuid=UB)], known, now_s=NOW_S)
    sampler.vm_metrics([raw(102, 11)], known, now_s=NOW_S)
    # UB comes back (re-defined, restarted): no delta against its old counters.
    [_, b] = sampler.vm_metrics([raw(104, 12), raw(104, 50, uuid=UB)], known, now_s=NOW_S)
    assert b.cpu_percent is None
    assert b.interval_s is None


def rates_after(sampler: Sampler, reset: bool) -> tuple[list[float | None], float | None]:
    """The rates of a second tick, VM (CPU, interval, disk, network) and host CPU, with a
    reset between the two ticks or not."""
    known = {UA: state()}
    node = NodeReading(16, 64_000, 32_000, {"kernel": 100, "user": 100, "idle": 800, "iowait": 0})
    sampler.vm_metrics([raw(100, 10, rd=0, wr=0, rx=1_000, tx=0)], known, now_s=NOW_S)
    sampler.host_metrics([], list(known.values()), node)
    if reset:
        sampler.reset()
    [m] = sampler.vm_metrics(
        [raw(102, 11, rd=819_200, wr=409_600, rx=5_000, tx=2_000)], known, now_s=NOW_S
    )
    later = {"kernel": 150, "user": 150, "idle": 1000, "iowait": 0}
    host = sampler.host_metrics([m], list(known.values()), replace(node, cpu_stats=later))
    disk, net = m.disk_io[0], m.network_io[0]
    vm = [m.cpu_percent, m.interval_s, disk.read_bps, disk.write_bps, disk.read_iops]
    vm += [disk.write_iops, net.rx_bps, net.tx_bps]
    return vm, host.cpu_percent


def test_reset_forgets_every_baseline() -> None:
    sampler = Sampler("kvm1", memory_stats_period=5)
    sampler.vm_metrics([raw(100, 10)], {UA: state()}, now_s=NOW_S)
    sampler.reset()
    [m] = sampler.vm_metrics([raw(102, 11)], {UA: state()}, now_s=NOW_S)
    assert m.cpu_percent is None
    # Every rate has a baseline: without a reset the second tick has them all, after one none.
    vm, host = rates_after(Sampler("kvm1", memory_stats_period=5), reset=False)
    assert None not in vm
    assert host is not None
    vm, host = rates_after(Sampler("kvm1", memory_stats_period=5), reset=True)
    assert vm == [None] * len(vm)
    assert host is None


def test_host_metrics_counts() -> None:
    sampler = Sampler("kvm1", memory_stats_period=5)
    known = [
        state(UA, RUNNING, vcpus=2, memory_mb=2048),
        state(UB, PAUSED, vcpus=4, memory_mb=1024),
        state("c0000000-0000-4000-8000-000000000003", SHUTOFF, vcpus=8, memory_mb=8192),
    ]
    first = sampler.host_metrics(
        [],
        known,
        NodeReading(
            cpus=16,
            memory_total_mb=64_000,
            memory_free_mb=32_000,
            cpu_stats={"kernel": 100, "user": 100, "idle": 800, "iowait": 0},
        ),
    )
    assert first.cpu_percent is None
    assert (first.cpus, first.memory_total_mb, first.memory_free_mb) == (16, 64_000, 32_000)
    assert first.vms_total == 3
    assert first.vms_running == 1
    assert first.vcpus_allocated == 6  # running + paused hold their vCPUs, stopped do not
    assert first.memory_allocated_mb == 3072
    second = sampler.host_metrics(
        [],
        known,
        NodeReading(
            cpus=16,
            memory_total_mb=64_000,
            memory_free_mb=30_000,
            cpu_stats={"kernel": 150, "user": 150, "idle": 1000, "iowait": 0},
        ),
    )
    assert second.cpu_percent == 33.33


def test_host_metrics_empty_host() -> None:
    sampler = Sampler("kvm1", memory_stats_period=5)
    hm = sampler.host_metrics([], [], NodeReading(None, None, None, None))
    assert (hm.vms_total, hm.vms_running, hm.vcpus_allocated, hm.memory_allocated_mb) == (
        0,
        0,
        0,
        0,
    )
    assert hm.cpu_percent is None
