"""A real Linux guest, seen by users: its own memory figure, a clean power-off, its NIC's bytes.

One guest (tests/support/linuxguest.py) is booted for the module, after a stack whose recorder
keeps every metrics batch: the tests run in file order, the last one reboots and stops it.
Figures go into the tier's report line.
"""

from __future__ import annotations

import itertools
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from tests.e2e.conftest import REPORT, _unavailable
from tests.e2e.stack import Stack, running_stack
from tests.support.guests import LINUX_MEMORY_MIB, Guests, LinuxGuest
from tests.support.libvirtd import Libvirtd
from tests.support.linuxguest import (
    BOOT_MARK,
    PING_COUNT,
    PING_FRAME_BYTES,
    LinuxGuestUnavailable,
)
from tests.support.mqtt import Received

# Under TCG on a loaded 2-core host a boot took 5-40 s; the waits below allow for worse (a
# reboot alone may wait 60 + 120 + 60 s), more than the tiers' 180 s per test.
pytestmark = pytest.mark.timeout(300)

KIB_PER_MIB = 1024
# Agent vs guest memory, MiB. The agent rounds to whole MiB (±0.5); the balloon's figures are
# up to one stats period (5 s) older than the console line they are compared with, and this
# quiet guest's MemAvailable moved by ~12 KiB over a whole run. 2 MiB leaves room for page
# cache and slab noise and is far below the ~36 MiB its kernel reserves, which the formula
# `current − usable` wrongly counted as used.
MEMORY_TOLERANCE_MIB = 2
TRAFFIC_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def linux_stack(libvirtd: Libvirtd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the module: up before the guest boots, so every tick of it is recorded."""
    with running_stack(tmp_path_factory.mktemp("linux"), libvirtd.uri) as s:
        yield s


@pytest.fixture(scope="module")
def linux(guests: Guests, linux_stack: Stack) -> Iterator[LinuxGuest]:
    t0 = time.monotonic()
    try:
        guest = guests.create_linux()
    except LinuxGuestUnavailable as exc:
        _unavailable(str(exc))
    REPORT["linux_accel"] = guest.accel.upper()
    REPORT["linux_kernel"] = guests.linux_kernel
    if guests.linux_probe_s is not None:
        REPORT["linux_kvm_probe_s"] = guests.linux_probe_s
    REPORT["linux_boot_s"] = round(guest.boot_s, 2)
    REPORT["linux_ready_s"] = round(time.monotonic() - t0, 2)
    yield guest
    guests.remove(guest)


def batches(stack: Stack, uuid: str, since: float = 0.0) -> list[tuple[Received, dict[str, Any]]]:
    """Every metrics batch received so far (at or after `since`) with the guest's entry."""
    topic = stack.client.topics.host_metrics(stack.host)
    found = []
    for m in stack.recorder.matching(lambda m: m.topic == topic and m.at >= since):
        vm = next((v for v in m.json()["vms"] if v["uuid"] == uuid), None)
        if vm is not None:
            found.append((m, vm))
    return found


def test_guest_memory_is_what_the_guest_itself_reports(
    libvirtd: Libvirtd, linux_stack: Stack, linux: LinuxGuest
) -> None:
    topic = linux_stack.client.topics.host_metrics(linux_stack.host)

    def guest_view(m: Received) -> bool:
        return (
            m.topic == topic
            and m.at >= since
            and any(
                v["uuid"] == linux.uuid and v["memory_source"] == "guest" for v in m.json()["vms"]
            )
        )

    # The guest's balloon driver answers once the agent has set the period: a period or two.
    # A batch between two console lines of the guest's own figures, to compare with.
    since = linux.console.wait_for("KVS tick", 60).at
    got = linux_stack.recorder.wait_for(guest_view, timeout=30)[0]
    linux.console.wait_for("KVS tick", 10, since=got.at)
    vm = next(v for v in got.json()["vms"] if v["uuid"] == linux.uuid)
    ticks = [t for at, t in linux.console.ticks() if got.at - 10 <= at <= got.at + 3]
    assert ticks, linux.console.lines[-10:]
    guest_used = [(t["total"] - t["avail"]) / KIB_PER_MIB for t in ticks]
    guest_pct = [100 * (t["total"] - t["avail"]) / t["total"] for t in ticks]
    REPORT["linux_guest_used_mib"] = round(guest_used[-1], 1)
    REPORT["linux_agent_used_mb"] = vm["memory_used_mb"]
    REPORT["linux_guest_memtotal_mib"] = round(ticks[-1]["total"] / KIB_PER_MIB, 1)

    assert vm["memory_total_mb"] == LINUX_MEMORY_MIB  # the VM's size, as the seed showed it
    assert min(guest_used) - MEMORY_TOLERANCE_MIB <= vm["memory_used_mb"], (vm, guest_used)
    assert vm["memory_used_mb"] <= max(guest_used) + MEMORY_TOLERANCE_MIB, (vm, guest_used)
    # The share is of what the guest has (MemTotal), not of the VM's size.
    assert min(guest_pct) - 2 <= vm["memory_percent"] <= max(guest_pct) + 2, (vm, guest_pct)

    # What a user reads over REST agrees, and the agent asked QEMU for the stats itself.
    rest = linux_stack.poll(
        f"/vm/{linux.name}/metrics", lambda r: r["memory_source"] == "guest", timeout=10
    )
    assert abs(rest["memory_used_mb"] - vm["memory_used_mb"]) <= MEMORY_TOLERANCE_MIB, rest
    conn = libvirt.open(libvirtd.uri)
    try:
        xml = conn.lookupByUUIDString(linux.uuid).XMLDesc(0)
    finally:
        conn.close()
    stats = ET.fromstring(xml).find("./devices/memballoon/stats")
    assert stats is not None and stats.get("period") == "5", xml


def test_nic_bytes_and_rate_are_what_the_guest_sent(linux_stack: Stack, linux: LinuxGuest) -> None:
    done = linux.console.wait_for("KVS traffic done", TRAFFIC_TIMEOUT_S)
    # The counters hold still now: wait for a guest line and a batch both after the traffic,
    # then the agent's tx_bytes must be exactly what the guest says eth0 sent.
    settled: dict[str, Any] = {}

    def agree() -> bool:
        ticks = [t for at, t in linux.console.ticks() if at > done.at]
        found = batches(linux_stack, linux.uuid, since=done.at + 1)
        if len(ticks) < 2 or not found:
            return False
        nic = found[-1][1]["network_io"][0]
        settled.update(guest=int(ticks[-1]["tx"]), agent=nic["tx_bytes"], rx=nic["rx_bytes"])
        return bool(settled["guest"] == settled["agent"])

    deadline = time.monotonic() + 20
    while not agree() and time.monotonic() < deadline:
        time.sleep(0.2)
    REPORT["linux_nic_tx_bytes_guest"] = settled.get("guest")
    REPORT["linux_nic_tx_bytes_agent"] = settled.get("agent")
    assert settled and settled["agent"] == settled["guest"], settled
    assert settled["guest"] >= PING_COUNT * PING_FRAME_BYTES, settled
    # Nobody answers the guest: what it received is a few host packets, so tx is its own.
    assert settled["rx"] < settled["guest"] / 10, settled

    # Rates: while the traffic ran, the agent's tx_bps against the guest's own rate (its
    # counter over its own uptime). Each side keeps only what lies wholly inside the traffic
    # (its counter already past the first frame at the start, short of the total at the end);
    # that can still be off by one frame at each end, on each side: the tolerance.
    ticks = [t for _, t in linux.console.ticks()]
    base, final = ticks[0]["tx"], settled["guest"]  # the first line comes before the pings
    during = [t for t in ticks if base + PING_FRAME_BYTES < t["tx"] < final]
    assert len(during) >= 3, ticks
    guest_s = during[-1]["up"] - during[0]["up"]
    guest_bps = (during[-1]["tx"] - during[0]["tx"]) / guest_s

    series = [vm for _, vm in batches(linux_stack, linux.uuid) if vm["network_io"]]
    inside = [
        (cur["network_io"][0]["tx_bps"], cur["interval_s"])
        for prev, cur in itertools.pairwise(series)
        if prev["network_io"][0]["tx_bytes"] > base + PING_FRAME_BYTES
        and cur["network_io"][0]["tx_bytes"] < final
    ]
    assert len(inside) >= 4 and all(bps is not None and dt for bps, dt in inside), inside
    agent_s = sum(dt for _, dt in inside)
    agent_bps = sum(bps * dt for bps, dt in inside) / agent_s
    tolerance = 2 * PING_FRAME_BYTES / agent_s + 2 * PING_FRAME_BYTES / guest_s
    REPORT["linux_nic_tx_bps_guest"] = round(guest_bps)
    REPORT["linux_nic_tx_bps_agent"] = round(agent_bps)
    assert abs(agent_bps - guest_bps) <= tolerance, (agent_bps, guest_bps, tolerance, inside)
    # No single tick claims more than the guest could send in it (one frame of slack a side).
    for bps, dt in inside:
        assert bps * dt <= guest_bps * dt + 2 * PING_FRAME_BYTES, (bps, dt, guest_bps)


def test_reboot_comes_back_and_shutdown_completes_in_the_guest(
    libvirtd: Libvirtd, linux_stack: Stack, linux: LinuxGuest
) -> None:
    boots = linux.console.count(BOOT_MARK)
    # A reboot without force: the ACPI power button, the guest powers off, libvirt resets it.
    t0 = time.monotonic()
    resp = linux_stack.gateway.post(f"/vm/{linux.name}/restart?wait=20")
    assert resp.status_code == 200, resp.text
    job = resp.json()
    assert (job["action"], job["status"]) == ("reboot", "succeeded"), job
    linux.console.wait_for("KVS power button", 60, since=t0)
    linux.console.wait_for(BOOT_MARK, 120, since=t0)
    assert linux.console.count(BOOT_MARK) == boots + 1
    REPORT["linux_reboot_s"] = round(time.monotonic() - t0, 2)
    # Up again, and its power button handler too (acpid starts before the NIC comes up).
    linux.console.wait_for("KVS net up", 60, since=t0)
    assert linux_stack.vm(linux.name)["state"] == "running"

    # A graceful stop that the guest completes itself: force_after is allowed, never needed.
    # 202 at once, then the job is followed: a slow TCG guest must not meet the HTTP timeout.
    t0 = time.monotonic()
    resp = linux_stack.gateway.post(
        f"/vm/{linux.name}/stop?wait=0", json={"timeout_s": 60, "force_after": True}
    )
    assert resp.status_code == 202, resp.text
    job = linux_stack.poll(f"/jobs/{resp.json()['id']}", lambda j: bool(j["finished"]), timeout=90)
    REPORT["linux_shutdown_s"] = round(time.monotonic() - t0, 2)
    assert (job["action"], job["status"], job["state"]) == ("shutdown", "succeeded", "stopped"), job
    assert job["escalated"] is False, job
    assert linux.console.count("KVS power button") == 2
    conn = libvirt.open(libvirtd.uri)
    try:
        state, reason = conn.lookupByUUIDString(linux.uuid).state()
    finally:
        conn.close()
    # SHUTOFF because the guest shut down, not because someone destroyed it.
    assert (state, reason) == (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN)
    linux_stack.wait_vm(linux.name, "stopped")
