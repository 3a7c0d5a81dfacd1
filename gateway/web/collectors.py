"""Prometheus collectors: the gateway's own counters, and every host and VM of one cache snapshot.

Names follow the libvirt exporters' vocabulary under the `kvmsup_` namespace (`cpu_time_seconds`,
`block_read_bytes`, `interface_receive_packets`, ...): cumulative values are counters with the
`_total` suffix, everything else gauges, in base units (bytes, seconds). A value the gateway does
not know (a first sample, a stopped VM, an older agent) is left out rather than exported as 0.
Both collectors work on data taken beforehand, without any lock, so building and rendering a
scrape can run off the request's event loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from gateway.auth import FAILURE_REASONS
from gateway.core.state import Snapshot
from gateway.stalls import THRESHOLD_S, StallFigures
from shared.messages import FINAL_STATUSES, VM_STATES, DiskIO, NetIO, VmMetrics

MIB = 1024 * 1024
JOB_STATUSES = ("pending", "accepted", *FINAL_STATUSES)
TRANSPORTS = ("rest", "socketio")
VM_LABELS = ["host", "uuid", "name"]
Family = GaugeMetricFamily | CounterMetricFamily
# (key in GatewayFigures.late, family, what it counts)
LATE_FAMILIES = (
    ("batches", "kvmsup_gateway_metrics_batches_late_total", "Metrics batches"),
    ("vm_metrics", "kvmsup_gateway_vm_metrics_late_total", "VM metrics in the batches"),
)


@dataclass(frozen=True)
class GatewayFigures:
    """The gateway's own state at one instant (taken by the route, under the owners' locks)."""

    gateway_id: str
    mqtt_connected: bool
    job_counts: Mapping[str, int] = field(default_factory=dict)
    jobs_in_flight: int = 0
    job_revisions: Mapping[tuple[str, str], int] = field(default_factory=dict)
    dropped: Mapping[str, int] = field(default_factory=dict)
    auth_failures: Mapping[tuple[str, str], int] = field(default_factory=dict)
    late: Mapping[str, int] = field(default_factory=dict)  # "batches", "vm_metrics"
    stalls: StallFigures = field(default_factory=StallFigures)


class GatewayCollector:
    """`kvmsup_gateway_*`: broker link, jobs, dropped messages, failed authentications."""

    def __init__(self, figures: GatewayFigures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        gw = [f.gateway_id]
        up = GaugeMetricFamily(
            "kvmsup_gateway_mqtt_connected",
            "1 when the gateway is connected to the MQTT broker",
            labels=["gateway"],
        )
        up.add_metric(gw, f.mqtt_connected)
        yield up
        jobs = CounterMetricFamily(
            "kvmsup_gateway_jobs_total",
            "Jobs that entered each status since the gateway started",
            labels=["gateway", "status"],
        )
        for status in JOB_STATUSES:
            jobs.add_metric([*gw, status], f.job_counts.get(status, 0))
        yield jobs
        revised = CounterMetricFamily(
            "kvmsup_gateway_jobs_revised_total",
            "Jobs whose final status, a guess of the gateway, the agent's reply replaced "
            "(each job stays counted once in kvmsup_gateway_jobs_total, under the guess)",
            labels=["gateway", "guess", "status"],
        )
        for (guess, real), count in sorted(f.job_revisions.items()):
            revised.add_metric([*gw, guess, real], count)
        yield revised
        in_flight = GaugeMetricFamily(
            "kvmsup_gateway_jobs_in_flight", "Jobs not finished yet", labels=["gateway"]
        )
        in_flight.add_metric(gw, f.jobs_in_flight)
        yield in_flight
        dropped = CounterMetricFamily(
            "kvmsup_gateway_messages_dropped_total",
            "MQTT messages (or entries of one) dropped since the gateway started, by reason",
            labels=["gateway", "reason"],
        )
        for reason, count in sorted(f.dropped.items()):
            dropped.add_metric([*gw, reason], count)
        yield dropped
        # Applied, but more than two intervals after they were taken (shed ones are a drop).
        for key, name, what in LATE_FAMILIES:
            late = CounterMetricFamily(
                name,
                f"{what} applied more than two intervals after they were taken",
                labels=["gateway"],
            )
            late.add_metric(gw, f.late.get(key, 0))
            yield late
        yield from _stall_families(gw, f.stalls)
        yield _auth_family(gw, f)


def _gauge(name: str, text: str, *extra: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, labels=[*VM_LABELS, *extra])


def _counter(name: str, text: str, *extra: str) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, labels=[*VM_LABELS, *extra])


class FleetCollector:
    """`kvmsup_host_*` and `kvmsup_vm_*` of one snapshot: a scrape is one consistent moment."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        yield from self._hosts()
        yield from self._vms()
        yield from self._guests()

    def _hosts(self) -> Iterator[Metric]:
        def gauge(name: str, text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=["host"])

        up = gauge("kvmsup_host_up", "1 when the host's agent is online")
        libvirt = gauge(
            "kvmsup_host_libvirt_connected",
            "1 when the host is online and its agent is connected to libvirt",
        )
        cpu = gauge("kvmsup_host_cpu_percent", "Host CPU use, percent")
        cpus = gauge("kvmsup_host_cpus", "Logical CPUs of the host")
        mem = gauge("kvmsup_host_memory_bytes", "Memory of the host")
        free = gauge("kvmsup_host_memory_free_bytes", "Memory of the host not in use")
        vms = gauge("kvmsup_host_vms", "VMs defined on the host")
        running = gauge("kvmsup_host_vms_running", "VMs running on the host")
        for host, status in sorted(self.snap.hosts.items()):
            h = [host]
            up.add_metric(h, status.online)
            libvirt.add_metric(h, bool(status.online and status.libvirt_connected))
            load = self.snap.loads.get(host)
            if load is None:
                continue
            hm = load.metrics
            hl = {"host": host}
            _add(cpu, hl, hm.cpu_percent)
            _add(cpus, hl, hm.cpus)
            _add(mem, hl, hm.memory_total_mb * MIB if hm.memory_total_mb is not None else None)
            _add(free, hl, hm.memory_free_mb * MIB if hm.memory_free_mb is not None else None)
            _add(vms, hl, hm.vms_total)
            _add(running, hl, hm.vms_running)
        yield from (up, libvirt, cpu, cpus, mem, free, vms, running)

    def _vms(self) -> Iterator[Metric]:
        state = _gauge("kvmsup_vm_state", "1 for the VM's current state, 0 for the others", "state")
        vcpus = _gauge("kvmsup_vm_vcpus", "Virtual CPUs")
        memory = _gauge("kvmsup_vm_memory_bytes", "Memory allocated to the VM")
        maximum = _gauge("kvmsup_vm_maximum_memory_bytes", "Memory the VM may be given at most")
        per_vm = _MetricFamilies()
        for (host, uuid), vm in sorted(self.snap.vms.items()):
            # One label dict per VM (and per device), shared by its samples: at 10,000 VMs a
            # dict per sample would be 300,000 of them, built and dropped on every scrape.
            v = {"host": host, "uuid": uuid, "name": vm.name}
            for name in VM_STATES:
                state.add_sample(state.name, {**v, "state": name}, vm.state == name)
            _add(vcpus, v, vm.vcpus)
            _add(memory, v, vm.memory_mb * MIB)
            _add(maximum, v, vm.max_memory_mb * MIB)
            m = self.snap.metrics.get((host, uuid))
            if m is not None:
                per_vm.add(v, m)
        # Filled before they are yielded: the exposition renders each family as it comes.
        yield from (state, vcpus, memory, maximum, *per_vm.families)

    def _guests(self) -> Iterator[Metric]:
        """What each VM's guest agent says: whether it answers, and every filesystem's use."""
        up = _gauge("kvmsup_vm_guest_agent_up", "1 when the VM's guest agent answered")
        mp = "mountpoint"
        used = _gauge("kvmsup_vm_filesystem_used_bytes", "Bytes in use, as the guest says", mp)
        size = _gauge("kvmsup_vm_filesystem_size_bytes", "Size, as the guest says", mp)
        for (host, uuid), guest in sorted(self.snap.guests.items()):
            vm = self.snap.vms.get((host, uuid))
            if vm is None:
                continue
            v = {"host": host, "uuid": uuid, "name": vm.name}
            _add(up, v, guest.status == "ok")
            seen: set[str] = set()
            for fs in guest.filesystems:
                if fs.mountpoint in seen:  # one series per mountpoint, or the scrape fails
                    continue
                seen.add(fs.mountpoint)
                fv = {**v, mp: fs.mountpoint}
                _add(used, fv, fs.used_bytes)
                _add(size, fv, fs.total_bytes)
        yield from (up, used, size)


def _add(family: Family, labels: dict[str, str], value: float | int | bool | None) -> None:
    """`add_metric` with the labels as a dict (shared) and unknown values left out."""
    if value is not None:
        name = f"{family.name}_total" if family.type == "counter" else family.name
        family.add_sample(name, labels, value)


class _MetricFamilies:
    """The families fed by each VM's latest metrics."""

    def __init__(self) -> None:
        self.stale = _gauge("kvmsup_vm_metrics_stale", "1 when the last sample could not be read")
        self.cpu = _gauge("kvmsup_vm_cpu_percent", "CPU use over the last tick, percent of vCPUs")
        self.cpu_time = _counter("kvmsup_vm_cpu_time_seconds", "CPU time used by the VM")
        self.used = _gauge("kvmsup_vm_memory_used_bytes", "Memory in use (guest view, else RSS)")
        d, i = "device", "interface"
        self.disk: tuple[Family, ...] = (
            _counter("kvmsup_vm_block_read_bytes", "Bytes read from a block device", d),
            _counter("kvmsup_vm_block_write_bytes", "Bytes written to a block device", d),
            _counter("kvmsup_vm_block_read_requests", "Read requests to a block device", d),
            _counter("kvmsup_vm_block_write_requests", "Write requests to a block device", d),
            _gauge("kvmsup_vm_block_read_bytes_per_second", "Read rate over the last tick", d),
            _gauge("kvmsup_vm_block_write_bytes_per_second", "Write rate over the last tick", d),
        )
        self.net: tuple[Family, ...] = (
            _counter("kvmsup_vm_interface_receive_bytes", "Bytes received on an interface", i),
            _counter("kvmsup_vm_interface_transmit_bytes", "Bytes sent on an interface", i),
            _counter("kvmsup_vm_interface_receive_packets", "Packets received", i),
            _counter("kvmsup_vm_interface_transmit_packets", "Packets sent", i),
            _counter("kvmsup_vm_interface_receive_errors", "Receive errors", i),
            _counter("kvmsup_vm_interface_transmit_errors", "Transmit errors", i),
            _counter("kvmsup_vm_interface_receive_drops", "Received packets dropped", i),
            _counter("kvmsup_vm_interface_transmit_drops", "Packets to send dropped", i),
            _gauge("kvmsup_vm_interface_receive_bytes_per_second", "Receive rate, last tick", i),
            _gauge("kvmsup_vm_interface_transmit_bytes_per_second", "Send rate, last tick", i),
        )

    @property
    def families(self) -> tuple[Metric, ...]:
        return (self.stale, self.cpu, self.cpu_time, self.used, *self.disk, *self.net)

    def add(self, v: dict[str, str], m: VmMetrics) -> None:
        _add(self.stale, v, m.stale)
        _add(self.cpu, v, m.cpu_percent)
        _add(self.cpu_time, v, m.cpu_time_s)
        _add(self.used, v, m.memory_used_mb * MIB if m.memory_used_mb is not None else None)
        for disk in m.disk_io:
            self._disk({**v, "device": disk.device}, disk)
        for nic in m.network_io:
            self._net({**v, "interface": nic.interface}, nic)

    def _disk(self, dv: dict[str, str], d: DiskIO) -> None:
        values = (d.read_bytes, d.write_bytes, d.read_reqs, d.write_reqs, d.read_bps, d.write_bps)
        for family, value in zip(self.disk, values, strict=True):
            _add(family, dv, value)

    def _net(self, nv: dict[str, str], n: NetIO) -> None:
        values = (
            *(n.rx_bytes, n.tx_bytes, n.rx_packets, n.tx_packets),
            *(n.rx_errors, n.tx_errors, n.rx_drops, n.tx_drops, n.rx_bps, n.tx_bps),
        )
        for family, value in zip(self.net, values, strict=True):
            _add(family, nv, value)


def _stall_families(gw: list[str], stalls: StallFigures) -> Iterator[Metric]:
    """The event loop's stalls (gateway/stalls.py): how many, and how long each was."""
    count = CounterMetricFamily(
        "kvmsup_gateway_loop_stalls_total",
        f"Times the event loop ran over {THRESHOLD_S * 1000:.0f} ms without serving anyone else, "
        "since start",
        labels=["gateway"],
    )
    count.add_metric(gw, stalls.count)
    yield count
    hist = HistogramMetricFamily(
        "kvmsup_gateway_loop_stall_seconds",
        "How long each stall of the event loop held every client",
        labels=["gateway"],
    )
    buckets = [("+Inf" if b == float("inf") else f"{b:g}", n) for b, n in stalls.buckets]
    hist.add_metric(gw, buckets, stalls.seconds)
    yield hist


def _auth_family(gw: list[str], f: GatewayFigures) -> Metric:
    auth = CounterMetricFamily(
        "kvmsup_gateway_auth_failures_total",
        "Failed authentications since the gateway started, by transport and reason",
        labels=["gateway", "transport", "reason"],
    )
    for transport in TRANSPORTS:
        for reason in FAILURE_REASONS:
            auth.add_metric([*gw, transport, reason], f.auth_failures.get((transport, reason), 0))
    return auth
