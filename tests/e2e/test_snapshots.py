"""Snapshots on real QEMU, through the whole stack (gateway → MQTT → agent → libvirt): a running
Linux guest's snapshot with its memory, the guest moving on, a revert, and the guest's own
console proving it is back where it was; then the refusals with real libvirt.

The guest (tests/support/linuxguest.py) prints `KVS tick up=<its uptime>` once a second. Its
uptime is its own clock: a guest whose memory was restored goes on counting from the moment of
the snapshot, so after the revert its ticks start again below what it had reached, without a
boot in between. Figures go into the tier's report line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from tests.e2e.conftest import REPORT, _unavailable
from tests.e2e.stack import Stack, running_stack
from tests.support.guests import Guest, Guests, LinuxGuest
from tests.support.libvirtd import Libvirtd
from tests.support.linuxguest import BOOT_MARK, LinuxGuestUnavailable

pytestmark = pytest.mark.timeout(300)

# The most snapshots the module's agent allows one VM: the limit is hit with real libvirt.
LIMIT = 2
# A memory snapshot of the 128 MiB guest, and a revert, under TCG on a loaded 2-core host.
SNAPSHOT_WAIT_S = 120
# Guest seconds the guest runs on after the snapshot before it is reverted.
MOVE_ON_S = 8


@pytest.fixture(scope="module")
def snap_stack(libvirtd: Libvirtd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("snapshots"), libvirtd.uri, KVMSUP_SNAPSHOTS_MAX_PER_VM=str(LIMIT)
    ) as s:
        yield s


@pytest.fixture(scope="module")
def linux(guests: Guests, snap_stack: Stack) -> Iterator[LinuxGuest]:
    try:
        guest = guests.create_linux(disk_format="qcow2")
    except LinuxGuestUnavailable as exc:
        _unavailable(str(exc))
    snap_stack.wait_vm(guest.name, "running", timeout=30)
    yield guest
    guests.remove(guest)


def _ask(stack: Stack, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    gw = stack.gateway
    url = f"{gw.url}{path}?wait={SNAPSHOT_WAIT_S}"
    headers = gw.headers(gw.tokens.operator)
    resp = gw.http.request(method, url, json=body, headers=headers, timeout=SNAPSHOT_WAIT_S + 30)
    assert resp.status_code == 200, resp.text
    job: dict[str, Any] = resp.json()
    assert job["finished"], job
    return job


def _uptime(guest: LinuxGuest, after: float, timeout: float = 30.0) -> float:
    """The guest's uptime in its first tick seen after `after` (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for at, tick in guest.console.ticks():
            if at > after:
                return tick["up"]
        time.sleep(0.1)
    raise AssertionError(f"no tick from {guest.name} within {timeout}s")


def _names(stack: Stack, guest: Guest) -> list[str]:
    body = stack.gateway.get(f"/vm/{guest.name}/snapshots").json()
    return [s["name"] for s in body["snapshots"]]


def test_a_revert_brings_the_running_guest_back_where_it_was(
    snap_stack: Stack, linux: LinuxGuest
) -> None:
    stack, guest = snap_stack, linux
    up_before = _uptime(guest, time.monotonic())
    t0 = time.monotonic()
    taken = _ask(stack, "POST", f"/vm/{guest.name}/snapshots", {"name": "before", "memory": True})
    took = time.monotonic() - t0
    assert taken["status"] == "succeeded" and taken["state"] == "running", taken
    up_after = _uptime(guest, time.monotonic())
    listed = stack.poll(f"/vm/{guest.name}/snapshots", lambda b: b["count"] == 1, timeout=15)
    [snap] = listed["snapshots"]
    assert (snap["name"], snap["state"], snap["has_memory"], snap["current"]) == (
        "before",
        "running",
        True,
        True,
    )

    # The guest moves on.
    deadline = time.monotonic() + 60
    while (moved := _uptime(guest, time.monotonic())) < up_after + MOVE_ON_S:
        assert time.monotonic() < deadline, f"the guest's uptime stayed at {moved}"
    boots = guest.console.count(BOOT_MARK)

    t1 = time.monotonic()
    back = _ask(
        stack,
        "POST",
        f"/vm/{guest.name}/snapshots/before/revert",
        {"confirm": guest.name},
    )
    assert back["status"] == "succeeded" and back["state"] == "running", back
    up_reverted = _uptime(guest, time.monotonic())
    # Its own clock went back to the snapshot's moment (a tick or two after it), far below
    # what it had reached, and it did not boot again: its memory was restored.
    assert up_before <= up_reverted <= up_after + 3, (up_before, up_after, moved, up_reverted)
    assert up_reverted < moved - MOVE_ON_S / 2
    assert guest.console.count(BOOT_MARK) == boots
    stack.wait_vm(guest.name, "running", timeout=15)
    REPORT["snapshot_s"] = round(took, 1)
    REPORT["revert_s"] = round(time.monotonic() - t1, 1)
    REPORT["revert_uptime"] = f"{moved:.0f}->{up_reverted:.0f} (snapshot at {up_before:.0f})"


def test_a_name_taken_a_missing_snapshot_and_the_limit_are_refused(
    snap_stack: Stack, linux: LinuxGuest
) -> None:
    stack, guest = snap_stack, linux
    path = f"/vm/{guest.name}/snapshots"
    if "before" not in _names(stack, guest):  # the revert test ran first or alone
        assert _ask(stack, "POST", path, {"name": "before"})["status"] == "succeeded"
    taken = _ask(stack, "POST", path, {"name": "before"})
    assert taken["status"] == "failed" and taken["error"]["code"] == "snapshot_exists", taken
    missing = _ask(stack, "POST", f"{path}/nope/revert", {"confirm": guest.name})
    assert missing["error"]["code"] == "snapshot_not_found", missing
    second = _ask(stack, "POST", path, {"name": "second", "memory": False})
    # QEMU may refuse an internal snapshot of a running guest without its memory: then that
    # is libvirt's own refusal, and the limit is reached with memory instead.
    if second["status"] != "succeeded":
        error = second["error"]
        REPORT["snapshot_without_memory"] = f"{error['code']}: {error['message'][:120]}"
        second = _ask(stack, "POST", path, {"name": "second"})
    assert second["status"] == "succeeded", second
    over = _ask(stack, "POST", path, {"name": "third"})
    assert over["status"] == "failed" and over["error"]["code"] == "snapshot_limit", over
    # Nothing deleted to make room (the list comes from the agent's retained message).
    listed = stack.poll(path, lambda b: b["count"] == LIMIT, timeout=15)
    assert sorted(s["name"] for s in listed["snapshots"]) == ["before", "second"]
    REPORT["snapshot_refusals"] = "snapshot_exists, snapshot_not_found, snapshot_limit"

    for name in ("second", "before"):
        gone = _ask(stack, "DELETE", f"{path}/{name}", {"confirm": guest.name})
        assert gone["status"] == "succeeded", gone
    stack.poll(path, lambda b: b["count"] == 0, timeout=15)


def test_a_raw_disk_and_pflash_firmware_are_refused(
    snap_stack: Stack, guests: Guests, libvirtd: Libvirtd
) -> None:
    stack = snap_stack
    raw = guests.create("idle")
    try:
        stack.wait_vm(raw.name, "running", timeout=30)
        refused = _ask(stack, "POST", f"/vm/{raw.name}/snapshots", {"name": "s"})
        assert refused["status"] == "failed", refused
        assert refused["error"]["code"] == "snapshot_raw_disk", refused
    finally:
        guests.remove(raw)

    name = f"kvs-efi-{int(time.time())}"
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='q35'>hvm</type>"
        "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader></os>"
        "<features><acpi/></features><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='/nonexistent/{name}.qcow2'/><target dev='vda' bus='virtio'/></disk>"
        "</devices></domain>"
    )
    conn = libvirt.open(libvirtd.uri)
    try:
        dom = conn.defineXML(xml)
        try:
            stack.wait_vm(name, "stopped", timeout=15)
            refused = _ask(stack, "POST", f"/vm/{name}/snapshots", {"name": "s"})
            assert refused["status"] == "failed", refused
            assert refused["error"]["code"] == "snapshot_firmware_unsupported", refused
            REPORT["snapshot_refused"] = "snapshot_raw_disk, snapshot_firmware_unsupported"
        finally:
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    finally:
        conn.close()
