"""The agent's libvirt calls: node facts and readings, domain lookups, actions, samples.

Each runs through the `Connection` it holds; domains are reached through its own handle cache,
which it empties on every new connection and trims on every lifecycle event.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import libvirt

from agent.errors import DomainNotFound
from agent.hypervisor.bulkstats import RawSample
from agent.hypervisor.connection import Connection
from agent.hypervisor.guestagent import GuestReading, read_guest
from agent.hypervisor.records import (
    DomainInfo,
    EventSink,
    NodeFacts,
    domain_info,
    version_text,
)
from agent.hypervisor.snapshots import (
    SnapshotOrder,
    SnapshotRecord,
    carry_out,
    check_order,
    read_all,
)
from agent.hypervisor.stats import BulkSampler

logger = logging.getLogger(__name__)

T = TypeVar("T")
# The points of a command's path where a test may hold a call (see `Hypervisor.hold`).
Hold = Callable[[str, str], None]
Guard = Callable[[], AbstractContextManager[None]]


class Hypervisor:
    """The libvirt adapter the service and the command executor use."""

    # A test's gate, called as hold(stage, uuid) on the thread about to make the call, so a
    # test can hold a call exactly across a command's deadline or a reconnect: "lookup" (a
    # domain handle was fetched, not yet cached), "read" (before a state read), "act" (an
    # action is about to begin), "begun" (it began: its guard let it through) and "list"
    # (before each domain of a listing is read). None in production.
    hold: Hold | None = None
    # Told on libvirt's event thread when a VM's guest agent connects or disconnects; it must
    # only take note and return (the service's guest watcher reads the VM later).
    on_guest_agent: Callable[[str], None] | None = None

    def __init__(self, uri: str, events: EventSink) -> None:
        self._stats = BulkSampler()
        # virDomain handles, each with its connection: a command then costs one RPC, not two.
        self._domains: dict[str, tuple[libvirt.virConnect, Any]] = {}
        self.connection = Connection(
            uri,
            events,
            on_open=self._connection_opened,
            on_domain_changed=self._forget,
            on_guest_agent=self._guest_agent,
        )

    def start(self) -> None:
        self.connection.start()

    def stop(self) -> None:
        self.connection.stop()

    def drop(self) -> None:
        """Gives the current connection up as lost (see `Connection.drop`)."""
        self.connection.drop()

    @property
    def connected(self) -> bool:
        return self.connection.connected

    def _connection_opened(self, conn: libvirt.virConnect) -> None:
        self._stats.connected(conn)
        self._domains.clear()

    def _forget(self, uuid: str) -> None:
        """On libvirt's event thread: the domain changed, its cached facts may be stale."""
        self._stats.forget(uuid)
        self._domains.pop(uuid, None)

    def _guest_agent(self, uuid: str) -> None:
        if self.on_guest_agent is not None:
            self.on_guest_agent(uuid)

    def _call(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        return self.connection.call(fn)

    def _pause(self, stage: str, uuid: str) -> None:
        if self.hold is not None:
            self.hold(stage, uuid)

    def node_facts(self) -> NodeFacts:
        def read(conn: libvirt.virConnect) -> NodeFacts:
            model, memory_mb, cpus, *_ = conn.getInfo()
            return NodeFacts(
                conn.getType(), version_text(conn.getVersion()), int(cpus), int(memory_mb), model
            )

        return self._call(read)

    def node_cpu_stats(self) -> dict[str, int] | None:
        def read(conn: libvirt.virConnect) -> dict[str, int] | None:
            try:
                return {k: int(v) for k, v in conn.getCPUStats(-1).items()}
            except libvirt.libvirtError:
                return None

        return self._call(read)

    def node_free_memory_mb(self) -> int | None:
        def read(conn: libvirt.virConnect) -> int | None:
            try:
                free = int(conn.getFreeMemory())
            except libvirt.libvirtError:
                return None
            return free // (1024 * 1024) if free > 0 else None

        return self._call(read)

    def domain_count(self) -> int:
        """How many domains the node has, active or defined (two cheap RPCs)."""
        return self._call(lambda conn: int(conn.numOfDomains()) + int(conn.numOfDefinedDomains()))

    def list_domains(self) -> list[DomainInfo]:
        def read(conn: libvirt.virConnect) -> list[DomainInfo]:
            infos = []
            for dom in conn.listAllDomains():
                self._pause("list", "")
                try:
                    infos.append(domain_info(dom))
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
            return infos

        return self._call(read)

    def _lookup(self, conn: libvirt.virConnect, uuid: str) -> Any:
        """The VM's handle on `conn`. A handle is cached with its connection and used on that
        connection only: a lookup that returns after a reconnect must not send the next call
        (an action, say) over the old connection, which a thawed libvirtd would still serve."""
        cached = self._domains.get(uuid)
        if cached is not None and cached[0] is conn:
            return cached[1]
        dom = conn.lookupByUUIDString(uuid)
        self._pause("lookup", uuid)
        self._domains[uuid] = (conn, dom)
        return dom

    def _on_domain(self, uuid: str, fn: Callable[[Any], T]) -> T:
        """Calls `fn` on the VM's handle; a handle that went stale is forgotten."""
        try:
            return self._call(lambda conn: fn(self._lookup(conn, uuid)))
        except DomainNotFound:
            self._domains.pop(uuid, None)
            raise

    def domain_info(self, uuid: str) -> DomainInfo:
        return self._on_domain(uuid, domain_info)

    def domain_state(self, uuid: str) -> tuple[int, int]:
        """State and reason only: one RPC, for the command path."""

        def read(dom: Any) -> Any:
            self._pause("read", uuid)
            return dom.state()

        state, reason = self._on_domain(uuid, read)
        return int(state), int(reason)

    def perform(self, uuid: str, action: str, guard: Guard | None = None) -> None:
        """Runs one lifecycle action; returns when libvirt has accepted it. `guard()` is
        entered on this thread immediately before the action's RPC, after the handle lookup,
        on whichever connection the call runs: it may refuse the action (a command's deadline)."""
        calls: dict[str, Callable[[Any], Any]] = {
            "start": lambda d: d.create(),
            "shutdown": lambda d: d.shutdown(),
            "destroy": lambda d: d.destroy(),
            "reboot": lambda d: d.reboot(0),
            "reset": lambda d: d.reset(0),
            "suspend": lambda d: d.suspend(),
            "resume": lambda d: d.resume(),
        }
        call = calls[action]

        def act(dom: Any) -> Any:
            self._pause("act", uuid)
            with guard() if guard is not None else contextlib.nullcontext():
                self._pause("begun", uuid)
                return call(dom)

        self._on_domain(uuid, act)

    def snapshots(self, uuid: str) -> list[SnapshotRecord]:
        """Every snapshot of the VM, oldest first."""
        return self._on_domain(uuid, read_all)

    def snapshot(self, uuid: str, order: SnapshotOrder, guard: Guard | None = None) -> None:
        """Runs one snapshot action like `perform` runs a lifecycle one: the refusals of
        `check_order` are read first, then `guard()` is entered right before the call."""

        def act(conn: libvirt.virConnect) -> None:
            dom = self._lookup(conn, uuid)
            snap = check_order(conn, dom, order)
            active = bool(dom.isActive())
            self._pause("act", uuid)
            with guard() if guard is not None else contextlib.nullcontext():
                self._pause("begun", uuid)
                carry_out(dom, order, snap, active)

        try:
            self._call(act)
        except DomainNotFound:
            self._domains.pop(uuid, None)
            raise

    def set_memory_stats_period(self, uuid: str, period_s: int) -> bool:
        def apply(conn: libvirt.virConnect) -> bool:
            try:
                conn.lookupByUUIDString(uuid).setMemoryStatsPeriod(
                    period_s, libvirt.VIR_DOMAIN_AFFECT_LIVE
                )
                return True
            except libvirt.libvirtError as exc:
                logger.debug("memory stats period not set on %s: %s", uuid, exc)
                return False

        return self._call(apply)

    def guest(self, uuid: str) -> GuestReading:
        """The guest agent's and the host's view of the inside of a running VM (may wait on the
        guest agent: callers bound it)."""
        return self._on_domain(uuid, read_guest)

    def sample(self) -> list[RawSample]:
        """One bulk stats call for every domain; per-domain fallback where the driver is silent."""
        return self._call(self._stats.sample)
