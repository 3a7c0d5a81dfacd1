"""libvirt's raw answers about a guest (`interfaceAddresses`, `guestInfo`) into a `GuestInfo`.

Pure. Whatever the guest agent says is the guest's word, so nothing it sends is trusted: a
value of the wrong type is left out, a text is cut at its bound, and a list past its bound is
cut with `truncated` set, so the message always passes the gateway's validation.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from agent.hypervisor import GuestReading
from shared.bounds import MAX_TEXT, U64
from shared.guest import (
    MAX_GUEST_ADDRESSES,
    MAX_GUEST_FILESYSTEMS,
    GuestAddress,
    GuestFilesystem,
    GuestInfo,
    GuestOs,
)

LABEL_MAX = 256
NAME_MAX = 1024
# libvirt's `type` of an address (VIR_IP_ADDR_TYPE_IPV4 / _IPV6).
_FAMILIES = {0: "ipv4", 1: "ipv6"}
_OS_KEYS = {
    "id": "os.id",
    "name": "os.name",
    "pretty_name": "os.pretty-name",
    "version": "os.version",
    "version_id": "os.version-id",
    "kernel_release": "os.kernel-release",
    "kernel_version": "os.kernel-version",
    "machine": "os.machine",
}
NOT_RUNNING = "the VM is not running"


def _text(value: object, limit: int = LABEL_MAX) -> str | None:
    if not isinstance(value, str):
        return None
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64:
        return None
    return value


def _address(interface: str, hwaddr: str | None, raw: object) -> GuestAddress | None:
    if not isinstance(raw, Mapping):
        return None
    kind = raw.get("type")
    family = _FAMILIES.get(kind) if type(kind) is int else None
    prefix = raw.get("prefix")
    try:
        address = ipaddress.ip_address(str(raw.get("addr")))
    except ValueError:
        return None
    if family is None or not isinstance(prefix, int) or not 0 <= prefix <= 128:
        return None
    if address.is_loopback or address.is_link_local:
        return None  # every guest has them: they say nothing of where the VM is reached
    return GuestAddress(
        interface=interface, hwaddr=hwaddr, family=family, address=str(address), prefix=prefix
    )


def addresses(interfaces: Mapping[str, Any] | None) -> tuple[list[GuestAddress], bool]:
    """Every usable address of every interface, at most MAX_GUEST_ADDRESSES; and whether more
    were left out."""
    found: list[GuestAddress] = []
    for name, data in (interfaces or {}).items():
        interface = _text(name)
        if interface is None or not isinstance(data, Mapping):
            continue
        hwaddr = _text(data.get("hwaddr"))
        raw_list = data.get("addrs")
        for raw in raw_list if isinstance(raw_list, list) else []:
            address = _address(interface, hwaddr, raw)
            if address is None:
                continue
            if len(found) == MAX_GUEST_ADDRESSES:
                return found, True
            found.append(address)
    return found, False


def filesystems(info: Mapping[str, Any]) -> tuple[list[GuestFilesystem], bool]:
    """`fs.<n>.*` of `guestInfo`, at most MAX_GUEST_FILESYSTEMS; and whether more were left out."""
    count = _count(info.get("fs.count")) or 0
    found: list[GuestFilesystem] = []
    for n in range(min(count, MAX_GUEST_FILESYSTEMS)):
        mountpoint = _text(info.get(f"fs.{n}.mountpoint"), NAME_MAX)
        if not mountpoint:
            continue
        found.append(
            GuestFilesystem(
                mountpoint=mountpoint,
                device=_text(info.get(f"fs.{n}.name")),
                type=_text(info.get(f"fs.{n}.fstype")),
                used_bytes=_count(info.get(f"fs.{n}.used-bytes")),
                total_bytes=_count(info.get(f"fs.{n}.total-bytes")),
            )
        )
    return found, count > MAX_GUEST_FILESYSTEMS


def _os(info: Mapping[str, Any]) -> GuestOs | None:
    fields = {field: _text(info.get(key)) for field, key in _OS_KEYS.items()}
    return GuestOs(**fields) if any(v is not None for v in fields.values()) else None


def _offset(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 86_400:
        return None
    return value


def guest_info(host: str, uuid: str, name: str, reading: GuestReading) -> GuestInfo:
    """One reading as the message the agent publishes."""
    found, cut = addresses(reading.interfaces)
    source = reading.address_source if found else None
    info = reading.info
    if info is None:
        return GuestInfo(
            host=host,
            uuid=uuid,
            name=name,
            status="unavailable",
            reason=_text(reading.agent_error or "the guest agent did not answer", MAX_TEXT),
            address_source=source,
            addresses=found,
            truncated=cut,
        )
    mounts, more = filesystems(info)
    return GuestInfo(
        host=host,
        uuid=uuid,
        name=name,
        status="ok",
        address_source=source,
        addresses=found,
        os=_os(info),
        hostname=_text(info.get("hostname")),
        timezone=_text(info.get("timezone.name")),
        timezone_offset_s=_offset(info.get("timezone.offset")),
        users=_count(info.get("user.count")),
        filesystems=mounts,
        truncated=cut or more,
    )


def unavailable(host: str, uuid: str, name: str, reason: str) -> GuestInfo:
    """What is published when nothing could be read (the VM stopped, the call hung or failed)."""
    return GuestInfo(
        host=host, uuid=uuid, name=name, status="unavailable", reason=_text(reason, MAX_TEXT)
    )


def same(a: GuestInfo | None, b: GuestInfo) -> bool:
    """Equal but for the time of reading: the message is published on change only."""
    return a is not None and a.model_dump(exclude={"ts"}) == b.model_dump(exclude={"ts"})
