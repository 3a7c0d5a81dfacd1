"""What libvirt says of the inside of a running domain: its addresses and the guest agent's
`guestInfo`, read raw (the parsing and the bounds are the caller's, pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import libvirt

from agent.errors import CallTimeout, DomainNotFound, HypervisorUnavailable
from agent.hypervisor.records import translate

# The address sources, best first: the guest's own view, then what the host saw of it.
ADDRESS_SOURCES: tuple[tuple[str, int], ...] = (
    ("agent", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT),
    ("lease", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE),
    ("arp", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP),
)
# A guest agent that did not answer `guestInfo` in time is not asked again for the addresses
# in the same reading: a second wait on it would only double the time the reading takes.
_AGENT_SILENT = {
    getattr(libvirt, "VIR_ERR_AGENT_UNRESPONSIVE", 86),
    getattr(libvirt, "VIR_ERR_AGENT_UNSYNCED", 97),
}


@dataclass(frozen=True)
class GuestReading:
    """`interfaces` as `interfaceAddresses` returned them (from `address_source`), `info` as
    `guestInfo` did; `agent_error` says why the guest agent did not answer."""

    interfaces: dict[str, Any] | None
    address_source: str | None
    info: dict[str, Any] | None
    agent_error: str | None


def _passed_on(exc: libvirt.libvirtError) -> bool:
    """Errors of the connection or of the domain itself are the caller's, not the guest's."""
    return isinstance(translate(exc), DomainNotFound | HypervisorUnavailable | CallTimeout)


def read_guest(dom: Any) -> GuestReading:
    """One reading of a domain's inside; raises `libvirtError` only for the connection's or the
    domain's own failures (callers translate)."""
    info: dict[str, Any] | None = None
    agent_error: str | None = None
    silent = False
    try:
        info = dict(dom.guestInfo(0, 0))
    except libvirt.libvirtError as exc:
        if _passed_on(exc):
            raise
        agent_error = exc.get_error_message() or str(exc)
        silent = exc.get_error_code() in _AGENT_SILENT
    for name, source in ADDRESS_SOURCES:
        if name == "agent" and silent:
            continue
        try:
            interfaces = dom.interfaceAddresses(source, 0)
        except libvirt.libvirtError as exc:
            if _passed_on(exc):
                raise
            continue
        if interfaces:
            return GuestReading(dict(interfaces), name, info, agent_error)
    return GuestReading(None, None, info, agent_error)
