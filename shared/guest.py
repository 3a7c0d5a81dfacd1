"""What a VM's guest agent says of its inside (SPEC §3 `…/vm/<uuid>/guest`), as frozen models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.bounds import Count, Ident, Label, Name, Text
from shared.messages import Message

GuestStatus = Literal["ok", "unavailable"]
# Where the addresses came from: the guest agent, libvirt's DHCP leases, or the host's ARP table.
AddressSource = Literal["agent", "lease", "arp"]
MAX_GUEST_ADDRESSES = 256  # in all, over every interface of the guest
MAX_GUEST_FILESYSTEMS = 256


class GuestAddress(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    interface: Label
    hwaddr: Label | None = None
    family: Literal["ipv4", "ipv6"]
    address: Label
    prefix: int = Field(ge=0, le=128)


class GuestOs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: Label | None = None
    name: Label | None = None
    pretty_name: Label | None = None
    version: Label | None = None
    version_id: Label | None = None
    kernel_release: Label | None = None
    kernel_version: Label | None = None
    machine: Label | None = None


class GuestFilesystem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    mountpoint: Name
    device: Label | None = None
    type: Label | None = None
    used_bytes: Count | None = None
    total_bytes: Count | None = None


class GuestInfo(Message):
    """Retained `…/vm/<uuid>/guest`, published when it changes; an empty retained payload when
    the VM is undefined. `status` is the guest agent's: `unavailable` (with `reason`) when it
    did not answer, while the addresses may still come from the host's side (`address_source`).
    The lists are cut at their bounds by the agent, which says so in `truncated`."""

    host: Ident
    uuid: Ident
    name: Name
    status: GuestStatus
    reason: Text | None = None
    address_source: AddressSource | None = None
    addresses: list[GuestAddress] = Field(default_factory=list, max_length=MAX_GUEST_ADDRESSES)
    os: GuestOs | None = None
    hostname: Label | None = None
    timezone: Label | None = None
    timezone_offset_s: int | None = Field(default=None, ge=-86_400, le=86_400)
    users: Count | None = None
    filesystems: list[GuestFilesystem] = Field(
        default_factory=list, max_length=MAX_GUEST_FILESYSTEMS
    )
    truncated: bool = False
