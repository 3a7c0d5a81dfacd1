"""The adapter's plain values: domain and node records, events, and libvirt errors translated.

Everything here leaves the adapter; nothing holds a `virDomain` or a connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import libvirt

from agent.errors import CallTimeout, DomainNotFound, HypervisorError, HypervisorUnavailable

_CONNECTION_ERRORS = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
}


@dataclass(frozen=True)
class DomainInfo:
    """A domain's identity and configuration as read at one instant."""

    uuid: str
    name: str
    state: int
    reason: int
    vcpus: int
    memory_kib: int
    max_memory_kib: int
    autostart: bool
    persistent: bool


@dataclass(frozen=True)
class NodeFacts:
    hypervisor_type: str
    hypervisor_version: str
    cpus: int
    memory_mb: int
    model: str


@dataclass(frozen=True)
class HypervisorEvent:
    """What the callbacks and the supervisor report; consumed by the service's event worker.
    A `lifecycle` event carries libvirt's event and detail codes, or -1 for a re-read that
    no libvirt event caused."""

    kind: Literal["lifecycle", "reboot", "connected", "disconnected"]
    uuid: str | None = None
    name: str | None = None
    event: int = -1
    detail: int = -1

    @property
    def started(self) -> bool:
        """libvirt says the domain started (a boot, a restore, a migration in)."""
        return self.kind == "lifecycle" and self.event == libvirt.VIR_DOMAIN_EVENT_STARTED


class EventSink(Protocol):
    """Where the adapter puts its events (the service's queue, which may carry more)."""

    def put_nowait(self, item: HypervisorEvent, /) -> None: ...


def version_text(version: int) -> str:
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"


def translate(exc: libvirt.libvirtError) -> Exception:
    """libvirtError → the agent's errors, keeping libvirt's own message."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(message)
    if exc.get_error_domain() == libvirt.VIR_FROM_RPC and "keepalive" in message:
        # libvirtd stopped answering (frozen, overloaded): the call hit a deadline, and the
        # request may still run once the daemon wakes up, so this is a timeout, not a failure.
        return CallTimeout(message)
    if code in _CONNECTION_ERRORS or exc.get_error_domain() == libvirt.VIR_FROM_RPC:
        return HypervisorUnavailable(message)
    err = HypervisorError(message)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        err.code = "invalid_state"
    elif code == libvirt.VIR_ERR_NO_SUPPORT:
        err.code = "unsupported"
    return err


def domain_info(dom: Any) -> DomainInfo:
    """Reads one `virDomain` into a `DomainInfo` (raises `libvirtError`; callers translate)."""
    state, reason = dom.state()
    _s, max_kib, cur_kib, vcpus, _cpu = dom.info()
    try:
        autostart = bool(dom.autostart())
    except libvirt.libvirtError:
        autostart = False
    return DomainInfo(
        uuid=dom.UUIDString(),
        name=dom.name(),
        state=int(state),
        reason=int(reason),
        vcpus=int(vcpus),
        memory_kib=int(cur_kib),
        max_memory_kib=int(max_kib),
        autostart=autostart,
        persistent=bool(dom.isPersistent()),
    )
