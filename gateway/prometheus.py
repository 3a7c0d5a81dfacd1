"""`GET /metrics`: the cache in Prometheus text exposition format 0.0.4 (pure rendering)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flask import Blueprint, Flask, Response, current_app
from flask.typing import ResponseReturnValue

from gateway.auth import FAILURE_REASONS, require
from gateway.jobs import GATEWAY_FINAL
from gateway.state import Snapshot
from shared.messages import VM_STATES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MIB = 1024 * 1024
JOB_STATUSES = ("pending", "accepted", *GATEWAY_FINAL)

Labels = tuple[tuple[str, str], ...]

bp = Blueprint("prometheus", __name__)


def escape_label(value: str) -> str:
    """Label values escape backslash, double quote and line feed, and nothing else."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text escapes backslash and line feed (not quotes)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if value != value:  # NaN
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class Family:
    name: str
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[Labels, float | int | bool]] = field(default_factory=list)

    def add(self, labels: Mapping[str, str], value: float | int | bool | None) -> None:
        if value is not None:
            self.samples.append((tuple(labels.items()), value))


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for fam in families:
        lines.append(f"# HELP {fam.name} {escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for labels, value in fam.samples:
            inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
            lines.append(
                f"{fam.name}{{{inner}}} {number(value)}" if inner else f"{fam.name} {number(value)}"
            )
    return "\n".join(lines) + "\n"


def collect(
    snap: Snapshot,
    *,
    gateway_id: str,
    mqtt_connected: bool,
    job_counts: Mapping[str, int],
    jobs_in_flight: int,
    dropped: Mapping[str, int] | None = None,
    job_revisions: Mapping[tuple[str, str], int] | None = None,
) -> list[Family]:
    """Every family, from one consistent snapshot (with metrics)."""
    fams: dict[str, Family] = {}

    def fam(name: str, kind: str, text: str) -> Family:
        return fams.setdefault(name, Family(name, kind, text))

    gw = {"gateway": gateway_id}
    fam(
        "kvmsup_gateway_mqtt_connected",
        "gauge",
        "1 when the gateway is connected to the MQTT broker",
    ).add(gw, mqtt_connected)
    for job_status in JOB_STATUSES:
        fam(
            "kvmsup_gateway_jobs_total",
            "counter",
            "Jobs that entered each status since the gateway started",
        ).add({**gw, "status": job_status}, job_counts.get(job_status, 0))
    revised = fam(
        "kvmsup_gateway_jobs_revised_total",
        "counter",
        "Jobs whose final status, a guess of the gateway, the agent's reply replaced "
        "(each job stays counted once in kvmsup_gateway_jobs_total, under the guess)",
    )
    for (guess, real), count in sorted((job_revisions or {}).items()):
        revised.add({**gw, "guess": guess, "status": real}, count)
    fam("kvmsup_gateway_jobs_in_flight", "gauge", "Jobs not finished yet").add(gw, jobs_in_flight)
    for reason, count in (dropped or {}).items():
        fam(
            "kvmsup_gateway_messages_dropped_total",
            "counter",
            "MQTT messages (or entries of one) dropped since the gateway started, by reason",
        ).add({**gw, "reason": reason}, count)

    for host, status in sorted(snap.hosts.items()):
        h = {"host": host}
        fam("kvmsup_host_up", "gauge", "1 when the host's agent is online").add(h, status.online)
        fam(
            "kvmsup_host_libvirt_connected",
            "gauge",
            "1 when the host is online and its agent is connected to libvirt",
        ).add(h, bool(status.online and status.libvirt_connected))
        load = snap.loads.get(host)
        if load is not None:
            fam("kvmsup_host_cpu_percent", "gauge", "Host CPU use, percent").add(
                h, load.metrics.cpu_percent
            )

    for (host, uuid), vm in sorted(snap.vms.items()):
        v = {"host": host, "uuid": uuid, "name": vm.name}
        for state in VM_STATES:
            fam("kvmsup_vm_state", "gauge", "1 for the VM's current state, 0 for the others").add(
                {**v, "state": state}, vm.state == state
            )
        fam("kvmsup_vm_vcpus", "gauge", "Virtual CPUs").add(v, vm.vcpus)
        fam("kvmsup_vm_memory_bytes", "gauge", "Memory allocated to the VM").add(
            v, vm.memory_mb * MIB
        )
        m = snap.metrics.get((host, uuid))
        if m is None:
            continue
        fam("kvmsup_vm_metrics_stale", "gauge", "1 when the last sample could not be read").add(
            v, m.stale
        )
        fam(
            "kvmsup_vm_cpu_percent", "gauge", "CPU use over the last tick, percent of its vCPUs"
        ).add(v, m.cpu_percent)
        used = m.memory_used_mb * MIB if m.memory_used_mb is not None else None
        fam("kvmsup_vm_memory_used_bytes", "gauge", "Memory in use (guest view, else RSS)").add(
            v, used
        )
        for d in m.disk_io:
            dv = {**v, "device": d.device}
            fam("kvmsup_vm_disk_read_bytes_total", "counter", "Bytes read").add(dv, d.read_bytes)
            fam("kvmsup_vm_disk_written_bytes_total", "counter", "Bytes written").add(
                dv, d.write_bytes
            )
            fam(
                "kvmsup_vm_disk_read_bytes_per_second", "gauge", "Read rate over the last tick"
            ).add(dv, d.read_bps)
            fam(
                "kvmsup_vm_disk_written_bytes_per_second", "gauge", "Write rate over the last tick"
            ).add(dv, d.write_bps)
        for n in m.network_io:
            nv = {**v, "interface": n.interface}
            fam("kvmsup_vm_network_receive_bytes_total", "counter", "Bytes received").add(
                nv, n.rx_bytes
            )
            fam("kvmsup_vm_network_transmit_bytes_total", "counter", "Bytes sent").add(
                nv, n.tx_bytes
            )
            fam(
                "kvmsup_vm_network_receive_bytes_per_second",
                "gauge",
                "Receive rate over the last tick",
            ).add(nv, n.rx_bps)
            fam(
                "kvmsup_vm_network_transmit_bytes_per_second",
                "gauge",
                "Send rate over the last tick",
            ).add(nv, n.tx_bps)
    return list(fams.values())


def auth_failures(gateway_id: str, counts: Mapping[tuple[str, str], int]) -> Family:
    """Failed authentications by transport and reason (`throttled`: refused unchecked)."""
    fam = Family(
        "kvmsup_gateway_auth_failures_total",
        "counter",
        "Failed authentications since the gateway started, by transport and reason",
    )
    for transport in ("rest", "socketio"):
        for reason in FAILURE_REASONS:
            labels = {"gateway": gateway_id, "transport": transport, "reason": reason}
            fam.add(labels, counts.get((transport, reason), 0))
    return fam


def ingest_lag(gateway_id: str, late: Mapping[str, int]) -> list[Family]:
    """Metrics applied late (as `metrics_late` in /health); shed ones are a drop reason."""
    gw = {"gateway": gateway_id}
    batches = Family(
        "kvmsup_gateway_metrics_batches_late_total",
        "counter",
        "Metrics batches applied more than two intervals after they were taken",
    )
    batches.add(gw, late.get("batches", 0))
    vms = Family(
        "kvmsup_gateway_vm_metrics_late_total",
        "counter",
        "VM metrics in the batches applied more than two intervals after they were taken",
    )
    vms.add(gw, late.get("vm_metrics", 0))
    return [batches, vms]


@bp.get("/metrics")
@require("viewer")
def metrics() -> ResponseReturnValue:
    """Viewer role: the series name every VM, like `GET /vms`."""
    gateway = current_app.extensions["kvmsup"]
    counts, in_flight = gateway.jobs.stats()
    families = collect(
        gateway.cache.snapshot(with_metrics=True),
        gateway_id=gateway.settings.gateway_id,
        mqtt_connected=gateway.bus.connected,
        job_counts=counts,
        jobs_in_flight=in_flight,
        dropped=gateway.drops.by_reason(),
        job_revisions=gateway.jobs.revision_counts(),
    )
    families.append(auth_failures(gateway.settings.gateway_id, gateway.auth.failures()))
    families.extend(ingest_lag(gateway.settings.gateway_id, gateway.drops.late_counts()))
    text = render(families)
    return Response(text, headers={"Content-Type": CONTENT_TYPE})


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
