"""What is inside a real Linux guest, through a real guest agent (Debian's qemu-guest-agent in
the guest's initramfs, tests/support/agentguest.py): the address, OS name, hostname and the
data filesystem's used and total bytes the agent publishes equal what the guest itself prints
on its console; with the guest agent killed inside the guest, the data turns `unavailable`
while the metrics ticks go on. Figures go into the tier's report line."""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.e2e.conftest import REPORT, _unavailable
from tests.e2e.stack import Stack, running_stack
from tests.support.agentguest import (
    ADDRESS,
    DF,
    PREFIX,
    agent_devices,
    build_agent_initramfs,
    make_data_disk,
)
from tests.support.gateway import wait_until
from tests.support.guests import (
    LINUX_MEMORY_MIB,
    Guests,
    domain_xml,
    linux_boot,
    linux_cpu,
)
from tests.support.libvirtd import Libvirtd
from tests.support.linuxguest import (
    BOOT_MARK,
    Console,
    LinuxGuestUnavailable,
    extract_pvh,
    find_kernel,
)

pytestmark = pytest.mark.timeout(300)

BOOT_TIMEOUT_S = {"kvm": 60.0, "tcg": 150.0}


class AgentGuest:
    def __init__(self, name: str, uuid_: str, console: Console, accel: str) -> None:
        self.name, self.uuid, self.console, self.accel = name, uuid_, console, accel


@pytest.fixture(scope="module")
def agent_stack(libvirtd: Libvirtd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("guest-agent"), libvirtd.uri, KVMSUP_GUEST_INFO_EVERY="2"
    ) as s:
        yield s


def _boot(conn: Any, xml: str, console: Console, timeout: float) -> bool:
    dom = conn.defineXML(xml)
    t0 = time.monotonic()
    dom.create()
    try:
        console.wait_for(BOOT_MARK, timeout, since=t0)
        return True
    except TimeoutError:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        return False


@pytest.fixture(scope="module")
def guest(
    libvirtd: Libvirtd, guests: Guests, agent_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentGuest]:
    work: Path = tmp_path_factory.mktemp("agent-guest")
    try:
        kernel = find_kernel()
        initrd = build_agent_initramfs(kernel, work / "initrd.gz")
    except LinuxGuestUnavailable as exc:
        _unavailable(str(exc))
    image = extract_pvh(kernel.image, work / "vmlinux") or kernel.image
    boot_disk = work / "boot.img"
    with boot_disk.open("wb") as f:
        f.truncate(1 << 20)
    data = make_data_disk(work / "data.img")
    name, uuid_ = f"kvs-agent-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    console = Console(work / "console.log")
    conn = libvirt.open(libvirtd.uri)
    tries = ["kvm", "tcg"] if guests.accel == "kvm" else ["tcg"]
    try:
        for accel in tries:
            xml = domain_xml(
                name,
                uuid_,
                boot_disk,
                f"kvsga{uuid_[:6]}",
                accel,
                LINUX_MEMORY_MIB,
                boot=linux_boot(image, initrd),
                cpu=linux_cpu(accel),
                serial=console.path,
            ).replace(
                "<controller type='usb'", agent_devices(data) + "\n    <controller type='usb'"
            )
            if _boot(conn, xml, console, BOOT_TIMEOUT_S[accel]):
                break
        else:
            pytest.fail(f"the guest did not boot: {console.lines[-10:]}")
        REPORT["agent_guest_accel"] = accel.upper()
        yield AgentGuest(name, uuid_, console, accel)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom = conn.lookupByUUIDString(uuid_)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        conn.close()


def _console(guest: AgentGuest, prefix: str) -> str:
    line = guest.console.wait_for(prefix, 90)
    return line.text.split(prefix, 1)[1].strip()


def test_the_agent_reports_what_the_guest_itself_sees(
    agent_stack: Stack, guest: AgentGuest
) -> None:
    hostname = _console(guest, "KVS hostname ")
    os_name = _console(guest, "KVS os NAME=").strip('"')
    df = DF.search(guest.console.wait_for("KVS df ", 90).text)
    assert df is not None
    used, avail = int(df["used"]) * 1024, int(df["avail"]) * 1024

    body = agent_stack.poll(
        f"/vm/{guest.name}/guest",
        lambda b: b["status"] == "ok" and any(f["mountpoint"] == "/data" for f in b["filesystems"]),
        timeout=120,
    )
    data = next(f for f in body["filesystems"] if f["mountpoint"] == "/data")
    REPORT.update(
        agent_guest_address=body["addresses"][0]["address"] if body["addresses"] else None,
        agent_guest_os=body["os"]["name"],
        agent_guest_hostname=body["hostname"],
        agent_guest_data_used=f"{data['used_bytes']} (guest {used})",
        agent_guest_data_total=f"{data['total_bytes']} (guest {used + avail})",
    )
    assert body["address_source"] == "agent"
    assert [(a["address"], a["prefix"], a["family"]) for a in body["addresses"]] == [
        (ADDRESS, PREFIX, "ipv4")
    ], body["addresses"]
    assert body["os"]["name"] == os_name
    assert body["hostname"] == hostname
    assert data["type"] == "ext2"
    assert data["used_bytes"] == used, (data, df.groupdict())
    assert data["total_bytes"] == used + avail, (data, df.groupdict())
    brief = agent_stack.gateway.get(f"/vm/{guest.name}").json()["guest"]
    assert brief["hostname"] == hostname and brief["addresses"][0]["address"] == ADDRESS


def test_a_killed_guest_agent_turns_unavailable_without_stalling_metrics(
    libvirtd: Libvirtd, agent_stack: Stack, guest: AgentGuest
) -> None:
    conn = libvirt.open(libvirtd.uri)
    try:
        dom = conn.lookupByUUIDString(guest.uuid)
        nic = ET.fromstring(dom.XMLDesc(0)).find("devices/interface")
        assert nic is not None
        ET.SubElement(nic, "link", {"state": "down"})  # the guest's signal to kill its agent
        dom.updateDeviceFlags(ET.tostring(nic, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    finally:
        conn.close()
    killed = guest.console.wait_for("KVS ga killed", 60)
    seen: list[dict[str, Any]] = []

    def unavailable() -> dict[str, Any] | None:
        seen.append(agent_stack.gateway.get(f"/vm/{guest.name}/guest").json())
        return seen[-1] if seen[-1]["status"] == "unavailable" else None

    try:
        body = wait_until(unavailable, timeout=60, every=0.5)
    except AssertionError:
        conn = libvirt.open(libvirtd.uri)
        try:
            dom = conn.lookupByUUIDString(guest.uuid)
            try:
                said: Any = dom.guestInfo(0, 0)
            except libvirt.libvirtError as exc:
                said = f"libvirt: {exc}"
        finally:
            conn.close()
        raise AssertionError(f"still {seen[-1]}; libvirt's guestInfo now: {said}") from None
    took = time.monotonic() - killed.at
    REPORT["agent_guest_unavailable_after_s"] = round(took, 1)
    REPORT["agent_guest_unavailable_reason"] = body["reason"]
    assert body["reason"]
    # The ticks go on, evenly, with this VM's figures fresh in each, from the moment the data
    # says `unavailable` (the link-state change before it is libvirt's own job on the VM).
    topic = agent_stack.client.topics.host_metrics(agent_stack.host)
    since = time.monotonic()
    batches = agent_stack.recorder.wait_for(
        lambda m: m.topic == topic and m.at >= since, count=10, timeout=30
    )
    interval = batches[0].json()["interval_s"]
    gaps = [b.at - a.at for a, b in itertools.pairwise(batches)]
    REPORT["agent_guest_tick_gap_max_s"] = round(max(gaps), 2)
    assert max(gaps) < 3 * interval, gaps
    entries = [next(v for v in m.json()["vms"] if v["uuid"] == guest.uuid) for m in batches]
    REPORT["agent_guest_states_around_kill"] = sorted({v["state"] for v in entries})
    assert all(v["stale"] is False for v in entries), entries
