"""Bulk domain sampling: one NOWAIT stats call per tick, per-domain fill-in where it is silent.

Holds the per-connection device-name cache; `Hypervisor` resets it on every new connection and
drops a domain's entry on each of its lifecycle events.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from agent.hypervisor.bulkstats import (
    BalloonStats,
    BlockCounters,
    NetCounters,
    RawSample,
    parse_record,
)

logger = logging.getLogger(__name__)

STATS_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
# A domain whose job lock is held is returned without the job-bound groups (NOWAIT): the tick
# never waits on a busy VM.
STATS_FLAGS = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT


class BulkSampler:
    """Turns `getAllDomainStats` records of one connection into `RawSample`s."""

    def __init__(self) -> None:
        self._bulk_is_complete = True
        self._devices: dict[str, tuple[list[str], list[str]]] = {}

    def connected(self, conn: libvirt.virConnect) -> None:
        """A new connection: its driver decides the fill-in, and no device name carries over."""
        # libvirt's test driver reports only the state group in bulk: fill the rest per domain.
        self._bulk_is_complete = conn.getType().upper() != "TEST"
        self._devices.clear()

    def forget(self, uuid: str) -> None:
        """A lifecycle event may have changed the domain's devices."""
        self._devices.pop(uuid, None)

    def sample(self, conn: libvirt.virConnect) -> list[RawSample]:
        records = conn.getAllDomainStats(STATS_GROUPS, STATS_FLAGS)
        taken = time.monotonic_ns()
        samples = []
        for dom, stats in records:
            raw = parse_record(dom.UUIDString(), dom.name(), stats, taken)
            if self._bulk_is_complete:
                active = raw.state not in (0, 5)
                if active and (raw.cpu_time_ns is None or raw.partial):
                    raw = raw.with_fallback(stale=True)
            else:
                raw = self._fill_in(dom, raw)
            samples.append(raw)
        return samples

    def _fill_in(self, dom: Any, raw: RawSample) -> RawSample:
        """Per-domain calls for what the bulk record lacks (libvirt's test driver)."""
        try:
            _state, max_kib, cur_kib, vcpus, cpu_ns = dom.info()
            changes: dict[str, Any] = {
                "vcpus": raw.vcpus or int(vcpus),
                "max_memory_kib": raw.max_memory_kib or int(max_kib),
                "balloon": BalloonStats(current_kib=int(cur_kib)),
            }
            if raw.state in (0, 5):
                return raw.with_fallback(**changes)
            changes["cpu_time_ns"] = int(cpu_ns)
            disks, nics = self._device_names(dom)
            blocks = []
            for dev in disks:
                rd_reqs, rd_bytes, wr_reqs, wr_bytes, _errs = dom.blockStats(dev)
                blocks.append(BlockCounters(dev, rd_bytes, wr_bytes, rd_reqs, wr_reqs))
            nets = []
            for dev in nics:
                rx_b, rx_p, rx_e, rx_d, tx_b, tx_p, tx_e, tx_d = dom.interfaceStats(dev)
                nets.append(
                    NetCounters(
                        dev, rx_b, tx_b, rx_e, tx_e, rx_d, tx_d, rx_packets=rx_p, tx_packets=tx_p
                    )
                )
            changes["blocks"] = tuple(blocks)
            changes["nets"] = tuple(nets)
            return raw.with_fallback(**changes)
        except libvirt.libvirtError as exc:
            logger.debug("per-domain stats of %s failed: %s", raw.uuid, exc)
            return raw.with_fallback(stale=True)

    def _device_names(self, dom: Any) -> tuple[list[str], list[str]]:
        uuid = dom.UUIDString()
        cached = self._devices.get(uuid)
        if cached is None:
            root = ET.fromstring(dom.XMLDesc(0))
            disks = [
                t.get("dev", "")
                for t in root.findall("./devices/disk[@device='disk']/target")
                if t.get("dev")
            ]
            nics = [
                t.get("dev", "") for t in root.findall("./devices/interface/target") if t.get("dev")
            ]
            cached = (disks, nics)
            self._devices[uuid] = cached
        return cached
