"""Internal snapshots of one domain: what may be taken, the calls that act, the list as values.

Every refusal is decided here from what libvirt says before the action's call (the domain's
disks and firmware, its snapshots, the free space of its storage pools), so a refused command
never reaches the action: internal snapshots live inside qcow2 images, so a raw disk cannot hold
one, and libvirt cannot take an internal snapshot of a guest whose UEFI variables are in pflash.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from agent.errors import SnapshotRefused

logger = logging.getLogger(__name__)

# Room kept free in a disk's storage pool beyond the guest's memory: the snapshot's metadata
# and the first clusters the guest rewrites after it (copy on write) need space at once.
SPACE_MARGIN_BYTES = 256 * 1024 * 1024

# libvirt's snapshot state words → the VM states of SPEC §3.
_STATES = {
    "running": "running",
    "blocked": "running",
    "paused": "paused",
    "shutdown": "shutting_down",
    "shutoff": "stopped",
    "crashed": "crashed",
    "pmsuspended": "suspended",
}


@dataclass(frozen=True)
class SnapshotOrder:
    """One snapshot action: `limit` is the most snapshots a VM may have (create only)."""

    action: str
    name: str
    description: str = ""
    memory: bool = True
    limit: int = 0


@dataclass(frozen=True)
class SnapshotRecord:
    name: str
    description: str
    created: int  # seconds since the epoch, as libvirt records it
    state: str  # a VM state of SPEC §3
    has_memory: bool
    current: bool
    parent: str | None


def read_all(dom: Any) -> list[SnapshotRecord]:
    """Every snapshot of the domain, oldest first (one XML read each)."""
    current = None
    if dom.hasCurrentSnapshot(0):
        current = dom.snapshotCurrent(0).getName()
    records = [_record(snap.getXMLDesc(0), current) for snap in dom.listAllSnapshots(0)]
    return sorted(records, key=lambda r: (r.created, r.name))


def _record(xml: str, current: str | None) -> SnapshotRecord:
    root = ET.fromstring(xml)
    name = root.findtext("name") or ""
    memory = root.find("memory")
    state = root.findtext("state") or ""
    return SnapshotRecord(
        name=name,
        description=root.findtext("description") or "",
        created=int(root.findtext("creationTime") or 0),
        state=_STATES.get(state, "unknown"),
        # A snapshot of a running guest made without the <memory> element (an older libvirt,
        # virsh's default) keeps it when its state says the guest was active.
        has_memory=memory.get("snapshot") == "internal"
        if memory is not None
        else state in ("running", "paused", "blocked"),
        current=name == current,
        parent=root.findtext("parent/name"),
    )


def check_order(conn: Any, dom: Any, order: SnapshotOrder) -> Any:
    """Raises SnapshotRefused when the order cannot work; reads only. Returns the snapshot's
    handle for a revert or a delete."""
    snap = _lookup(dom, order.name)
    if order.action != "snapshot_create":
        if snap is None:
            raise SnapshotRefused(
                "snapshot_not_found", f"the VM has no snapshot named {order.name!r}"
            )
        return snap
    if snap is not None:
        raise SnapshotRefused("snapshot_exists", f"the VM already has a snapshot {order.name!r}")
    count = int(dom.snapshotNum(0))
    if order.limit and count >= order.limit:
        raise SnapshotRefused(
            "snapshot_limit",
            f"the VM has {count} snapshots, the most allowed (KVMSUP_SNAPSHOTS_MAX_PER_VM): "
            "delete one first",
        )
    root = ET.fromstring(dom.XMLDesc(0))
    _check_firmware(root)
    disks = _disks(root)
    memory = int(dom.info()[2]) * 1024 if order.memory and dom.isActive() else 0
    _check_space(conn, disks, memory)
    return None


def _lookup(dom: Any, name: str) -> Any:
    try:
        return dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return None
        raise


def _check_firmware(root: ET.Element) -> None:
    os_el = root.find("os")
    loader = os_el.find("loader") if os_el is not None else None
    efi = os_el is not None and os_el.get("firmware") == "efi"
    if efi or (loader is not None and loader.get("type") == "pflash"):
        raise SnapshotRefused(
            "snapshot_firmware_unsupported",
            "the VM boots UEFI firmware from pflash, whose variables libvirt cannot keep in an "
            "internal snapshot",
        )


def _disks(root: ET.Element) -> list[str]:
    """The source paths of the VM's writable disks; refuses any disk that is not qcow2."""
    paths = []
    for disk in root.findall("devices/disk"):
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None:
            continue
        driver = disk.find("driver")
        fmt = driver.get("type") if driver is not None else None
        target = disk.find("target")
        dev = target.get("dev") if target is not None else "?"
        if fmt != "qcow2":
            raise SnapshotRefused(
                "snapshot_raw_disk",
                f"disk {dev} is {fmt or 'raw'}: internal snapshots need every disk in qcow2",
            )
        source = disk.find("source")
        path = None
        if source is not None:
            path = source.get("file") or source.get("dev")
        if path:
            paths.append(path)
    return paths


def _check_space(conn: Any, paths: list[str], memory: int) -> None:
    """Each disk's pool must hold the margin, and the first disk's also the guest's memory
    (libvirt writes an internal snapshot's memory state into the first qcow2 image). A disk
    outside any pool libvirt knows cannot be checked and is let through."""
    need: dict[str, int] = {}
    pools: dict[str, Any] = {}
    for index, path in enumerate(paths):
        try:
            pool = conn.storageVolLookupByPath(path).storagePoolLookupByVolume()
        except libvirt.libvirtError:
            logger.debug("disk %s is in no storage pool: its free space is not checked", path)
            continue
        key = pool.name()
        pools[key] = pool
        need[key] = need.get(key, 0) + SPACE_MARGIN_BYTES + (memory if index == 0 else 0)
    for key, wanted in need.items():
        available = int(pools[key].info()[3])
        if available < wanted:
            raise SnapshotRefused(
                "snapshot_no_space",
                f"storage pool {key!r} has {available // 2**20} MiB free, the snapshot needs "
                f"{wanted // 2**20} MiB",
            )


def carry_out(dom: Any, order: SnapshotOrder, snap: Any, active: bool) -> None:
    """The action's one call, inside the command's guard; `snap` and `active` were read
    before it."""
    if order.action == "snapshot_create":
        dom.snapshotCreateXML(create_xml(order, active), 0)
    elif order.action == "snapshot_revert":
        dom.revertToSnapshot(snap, 0)
    else:
        snap.delete(0)


def create_xml(order: SnapshotOrder, active: bool) -> str:
    """A running guest's memory is saved only when asked; a stopped one has none to save."""
    memory = ""
    if active:
        memory = "<memory snapshot='internal'/>" if order.memory else "<memory snapshot='no'/>"
    return (
        f"<domainsnapshot><name>{escape(order.name)}</name>"
        f"<description>{escape(order.description)}</description>{memory}</domainsnapshot>"
    )
