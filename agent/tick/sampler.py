"""One tick: raw counters → `VmMetrics` and host figures, remembering the previous sample."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from agent import domstate
from agent.hypervisor.bulkstats import BlockCounters, NetCounters, RawSample
from agent.tick.metrics import cpu_percent, memory_view, node_cpu_percent, rate
from shared.messages import ACTIVE_STATES, DiskIO, HostMetrics, NetIO, VmMetrics, VmState, utc_now

KIB_PER_MIB = 1024


@dataclass(frozen=True)
class NodeReading:
    cpus: int | None
    memory_total_mb: int | None
    memory_free_mb: int | None
    cpu_stats: dict[str, int] | None


class Sampler:
    """Keeps the last RawSample per VM so rates and CPU % are deltas between two ticks."""

    def __init__(self, host: str, memory_stats_period: int) -> None:
        self.host = host
        self.period = memory_stats_period
        self._prev: dict[str, RawSample] = {}
        self._prev_node: dict[str, int] | None = None

    def reset(self) -> None:
        """Forget every previous sample (after a reconnect the counters may have restarted)."""
        self._prev.clear()
        self._prev_node = None

    def vm_metrics(
        self, samples: list[RawSample], known: dict[str, VmState], now_s: float | None = None
    ) -> list[VmMetrics]:
        now_s = time.time() if now_s is None else now_s
        ts = utc_now()
        out = []
        seen = set()
        for raw in samples:
            seen.add(raw.uuid)
            prev = self._prev.get(raw.uuid)
            out.append(self._one(raw, prev, known.get(raw.uuid), now_s, ts))
            if not raw.stale:
                self._prev[raw.uuid] = raw
        for uuid in set(self._prev) - seen:
            del self._prev[uuid]
        return out

    def _one(
        self,
        raw: RawSample,
        prev: RawSample | None,
        known: VmState | None,
        now_s: float,
        ts: datetime,
    ) -> VmMetrics:
        vcpus = raw.vcpus or (known.vcpus if known else 0)
        dt_s = (raw.taken_ns - prev.taken_ns) / 1e9 if prev else 0.0
        active = domstate.state_name(raw.state) in ACTIVE_STATES
        fallback_kib = known.memory_mb * KIB_PER_MIB if known else raw.max_memory_kib
        mem = memory_view(raw.balloon, fallback_kib, now_s, self.period)
        return VmMetrics(
            host=self.host,
            uuid=raw.uuid,
            name=raw.name,
            state=domstate.state_name(raw.state),
            cpu_percent=cpu_percent(
                prev.cpu_time_ns if prev else None,
                prev.taken_ns if prev else None,
                raw.cpu_time_ns,
                raw.taken_ns,
                vcpus,
            )
            if active and not raw.stale
            else (0.0 if not active else None),
            vcpus=vcpus,
            memory_percent=mem.percent if active else None,
            memory_used_mb=mem.used_mb if active else None,
            memory_total_mb=mem.total_mb,
            memory_source=mem.source if active else "none",
            disk_io=[self._disk(b, prev, dt_s) for b in raw.blocks],
            network_io=[self._net(n, prev, dt_s) for n in raw.nets],
            interval_s=round(dt_s, 3) if prev else None,
            stale=raw.stale,
            cpu_time_s=raw.cpu_time_ns / 1e9 if active and raw.cpu_time_ns is not None else None,
            ts=ts,
        )

    @staticmethod
    def _disk(b: BlockCounters, prev: RawSample | None, dt_s: float) -> DiskIO:
        p = next((x for x in prev.blocks if x.device == b.device), None) if prev else None
        return DiskIO(
            device=b.device,
            read_bytes=b.read_bytes,
            write_bytes=b.write_bytes,
            read_bps=rate(p.read_bytes if p else None, b.read_bytes, dt_s),
            write_bps=rate(p.write_bytes if p else None, b.write_bytes, dt_s),
            read_iops=rate(p.read_reqs if p else None, b.read_reqs, dt_s),
            write_iops=rate(p.write_reqs if p else None, b.write_reqs, dt_s),
            read_reqs=b.read_reqs,
            write_reqs=b.write_reqs,
        )

    @staticmethod
    def _net(n: NetCounters, prev: RawSample | None, dt_s: float) -> NetIO:
        p = next((x for x in prev.nets if x.interface == n.interface), None) if prev else None
        return NetIO(
            interface=n.interface,
            rx_bytes=n.rx_bytes,
            tx_bytes=n.tx_bytes,
            rx_bps=rate(p.rx_bytes if p else None, n.rx_bytes, dt_s),
            tx_bps=rate(p.tx_bytes if p else None, n.tx_bytes, dt_s),
            rx_errors=n.rx_errors,
            tx_errors=n.tx_errors,
            rx_drops=n.rx_drops,
            tx_drops=n.tx_drops,
            rx_packets=n.rx_packets,
            tx_packets=n.tx_packets,
        )

    def host_metrics(
        self, vms: list[VmMetrics], known: list[VmState], node: NodeReading
    ) -> HostMetrics:
        running = [s for s in known if s.is_active]
        cpu = node_cpu_percent(self._prev_node, node.cpu_stats)
        self._prev_node = node.cpu_stats
        return HostMetrics(
            cpu_percent=cpu,
            cpus=node.cpus,
            memory_total_mb=node.memory_total_mb,
            memory_free_mb=node.memory_free_mb,
            vms_total=len(known),
            vms_running=sum(1 for s in known if s.state == "running"),
            vcpus_allocated=sum(s.vcpus for s in running),
            memory_allocated_mb=sum(s.memory_mb for s in running),
        )
