"""The agent's libvirt calls: node facts and readings, domain lookups, lifecycle actions, samples.

Each runs through `Connection._call`; domains are reached through the connection's handle cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from agent.bulkstats import RawSample
from agent.errors import DomainNotFound
from agent.hypervisor.connection import Connection
from agent.hypervisor.records import DomainInfo, NodeFacts, domain_info, version_text

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Hypervisor(Connection):
    """The libvirt adapter the service and the command executor use."""

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

    def list_domains(self) -> list[DomainInfo]:
        def read(conn: libvirt.virConnect) -> list[DomainInfo]:
            infos = []
            for dom in conn.listAllDomains():
                try:
                    infos.append(domain_info(dom))
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
            return infos

        return self._call(read)

    def _lookup(self, conn: libvirt.virConnect, uuid: str) -> Any:
        dom = self._domains.get(uuid)
        if dom is None:
            dom = conn.lookupByUUIDString(uuid)
            self._domains[uuid] = dom
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
        state, reason = self._on_domain(uuid, lambda d: d.state())
        return int(state), int(reason)

    def perform(self, uuid: str, action: str) -> None:
        """Runs one lifecycle action; returns when libvirt has accepted it."""
        calls: dict[str, Callable[[Any], Any]] = {
            "start": lambda d: d.create(),
            "shutdown": lambda d: d.shutdown(),
            "destroy": lambda d: d.destroy(),
            "reboot": lambda d: d.reboot(0),
            "reset": lambda d: d.reset(0),
            "suspend": lambda d: d.suspend(),
            "resume": lambda d: d.resume(),
        }
        self._on_domain(uuid, calls[action])

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

    def sample(self) -> list[RawSample]:
        """One bulk stats call for every domain; per-domain fallback where the driver is silent."""
        return self._call(self._stats.sample)
