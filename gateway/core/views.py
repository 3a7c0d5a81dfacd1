"""Pure functions shaping cached models into the seed's JSON (plus `host`, `uuid`, extras)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from gateway.core.history import FIELDS
from gateway.core.records import AuditEntry, History, HistoryPoint
from gateway.core.state import HostLoad, Snapshot
from shared.guest import GuestInfo
from shared.messages import VM_STATES, HostStatus, VmEvent, VmMetrics, VmState, as_dict, iso_z


def vm_summary(vm: VmState, online: bool) -> dict[str, Any]:
    """One entry of `GET /vms` (seed: name, state, vcpus, memory_mb, is_active)."""
    return {
        "name": vm.name,
        "state": vm.state,
        "vcpus": vm.vcpus,
        "memory_mb": vm.memory_mb,
        "is_active": vm.is_active,
        "host": vm.host,
        "uuid": vm.uuid,
        "host_online": online,
    }


def vm_detail(vm: VmState, online: bool) -> dict[str, Any]:
    """`GET /vm/<name>`: the summary plus everything the VM state carries."""
    return {
        **vm_summary(vm, online),
        "reason": vm.reason,
        "max_memory_mb": vm.max_memory_mb,
        "autostart": vm.autostart,
        "persistent": vm.persistent,
        "seq": vm.seq,
        "updated_at": as_dict(vm)["ts"],
    }


# -- what each VM's guest agent says --------------------------------------------------------
def _addresses(guest: GuestInfo) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json") for a in guest.addresses]


def guest_brief(guest: GuestInfo | None) -> dict[str, Any] | None:
    """`GET /vm/<name>`'s `guest`: where the VM is reached and what it runs; null until its
    agent has said anything."""
    if guest is None:
        return None
    return {
        "status": guest.status,
        "reason": guest.reason,
        "address_source": guest.address_source,
        "addresses": _addresses(guest),
        "os": guest.os.model_dump(mode="json") if guest.os else None,
        "hostname": guest.hostname,
        "updated_at": iso_z(guest.ts),
    }


def _used_percent(used: int | None, total: int | None) -> float | None:
    if used is None or not total:
        return None
    return round(min(100.0, 100.0 * used / total), 2)


def guest_detail(vm: VmState | GuestInfo, guest: GuestInfo | None) -> dict[str, Any]:
    """`GET /vm/<name>/guest` and Socket.IO `vm_guest`: everything the guest said, each
    filesystem with its `used_percent`. `status` is `unknown` until the VM's agent has said
    anything (an agent older than the message, or one that has not read the VM yet)."""
    body: dict[str, Any] = {"host": vm.host, "uuid": vm.uuid, "name": vm.name}
    if guest is None:
        return {
            **body,
            "status": "unknown",
            "reason": None,
            "address_source": None,
            "addresses": [],
            "os": None,
            "hostname": None,
            "timezone": None,
            "timezone_offset_s": None,
            "users": None,
            "filesystems": [],
            "truncated": False,
            "updated_at": None,
        }
    data = as_dict(guest)
    for key in ("v", "ts", "host", "uuid", "name"):
        data.pop(key, None)
    for fs in data["filesystems"]:
        fs["used_percent"] = _used_percent(fs["used_bytes"], fs["total_bytes"])
    return {**body, **data, "updated_at": iso_z(guest.ts)}


def guests_list(snap: Snapshot, host: str | None = None) -> dict[str, Any]:
    """`GET /guests`: every VM's brief, by host and uuid (the dashboard's list of addresses)."""
    found = [
        {"host": h, "uuid": u, "name": snap.vms[(h, u)].name, **(guest_brief(g) or {})}
        for (h, u), g in sorted(snap.guests.items())
        if (h, u) in snap.vms and (host is None or h == host)
    ]
    return {"count": len(found), "guests": found}


def vms_list(snap: Snapshot) -> dict[str, Any]:
    """`GET /vms` and Socket.IO `vms_list`: sorted by name, then host."""
    vms = sorted(snap.vms.values(), key=lambda v: (v.name, v.host))
    return {"count": len(vms), "vms": [vm_summary(v, snap.online(v.host)) for v in vms]}


def vm_metrics(vm: VmState, metrics: VmMetrics | None) -> dict[str, Any]:
    """`GET /vm/<name>/metrics` and `vm_metrics`: the seed's fields first, with the seed's
    types (whole-MiB ints, float or null percentages, int byte counters), then the rest.
    Before the first batch (gateway just started, VM just appeared) the same keys, numbers
    null, lists empty, and `stale`. Built from the fields directly: this runs for every VM
    of `all_metrics`, and a generic model dump costs several times more."""
    if metrics is None:
        return {
            "name": vm.name,
            "state": vm.state,
            "cpu_percent": None,
            "vcpus": vm.vcpus,
            "memory_percent": None,
            "memory_used_mb": None,
            "memory_total_mb": vm.memory_mb,
            "disk_io": [],
            "network_io": [],
            "host": vm.host,
            "uuid": vm.uuid,
            "ts": None,
            "interval_s": None,
            "memory_source": "none",
            "stale": True,
        }
    m = metrics
    return {
        "name": vm.name,
        # The cached state is fresher than the last tick when a command just changed it.
        "state": vm.state,
        "cpu_percent": m.cpu_percent,
        "vcpus": m.vcpus,
        "memory_percent": m.memory_percent,
        "memory_used_mb": m.memory_used_mb,
        "memory_total_mb": m.memory_total_mb,
        "disk_io": [d.model_dump() for d in m.disk_io],
        "network_io": [n.model_dump() for n in m.network_io],
        "host": vm.host,
        "uuid": vm.uuid,
        "ts": iso_z(m.ts),
        "interval_s": m.interval_s,
        "memory_source": m.memory_source,
        "stale": m.stale,
    }


def all_metrics(snap: Snapshot) -> dict[str, Any]:
    """Socket.IO `all_metrics`: every VM's latest metrics, like `vms_list` in form."""
    vms = sorted(snap.vms.values(), key=lambda v: (v.name, v.host))
    items = [vm_metrics(v, snap.metrics.get((v.host, v.uuid))) for v in vms]
    return {"count": len(items), "metrics": items}


def host_view(status: HostStatus, load: HostLoad | None, vms: list[VmState]) -> dict[str, Any]:
    data = as_dict(status)
    data.pop("v", None)
    data["vms_total"] = len(vms)
    data["vms_running"] = sum(1 for v in vms if v.state == "running")
    data["metrics"] = None
    if load is not None:
        data["metrics"] = {
            **load.metrics.model_dump(mode="json"),
            "interval_s": load.interval_s,
            "ts": iso_z(load.ts),
        }
    return data


def hosts_list(snap: Snapshot) -> dict[str, Any]:
    by_host: dict[str, list[VmState]] = {h: [] for h in snap.hosts}
    for v in snap.vms.values():
        if v.host in by_host:
            by_host[v.host].append(v)
    hosts = [host_view(s, snap.loads.get(h), by_host[h]) for h, s in sorted(snap.hosts.items())]
    return {"count": len(hosts), "hosts": hosts}


def summary(snap: Snapshot) -> dict[str, Any]:
    """`GET /stats/summary`: hosts, VMs per state, vCPUs and memory allocated and in use."""
    vms = list(snap.vms.values())
    states: Counter[str] = Counter(v.state for v in vms)
    active = [v for v in vms if v.is_active]
    used = [snap.metrics[(v.host, v.uuid)] for v in active if (v.host, v.uuid) in snap.metrics]
    cpus = [m.cpu_percent for m in used if m.cpu_percent is not None]
    online = sum(1 for s in snap.hosts.values() if s.online)
    return {
        "total_vms": len(vms),
        "running_vms": states["running"],
        "stopped_vms": states["stopped"],
        "paused_vms": states["paused"],
        "states": {s: states[s] for s in VM_STATES},
        "total_vcpus": sum(v.vcpus for v in vms),
        "total_memory_mb": sum(v.memory_mb for v in vms),
        "allocated_vcpus": sum(v.vcpus for v in active),
        "allocated_memory_mb": sum(v.memory_mb for v in active),
        "used_memory_mb": sum(m.memory_used_mb or 0 for m in used),  # whole MiB, as the seed
        "avg_cpu_percent": round(sum(cpus) / len(cpus), 2) if cpus else None,
        "hosts": {"total": len(snap.hosts), "online": online, "offline": len(snap.hosts) - online},
    }


def history(vm: VmState, minutes: float, history: History) -> dict[str, Any]:
    """The seed-era fields of each point are averages when a point stands for several
    ticks; `*_max` and `samples` say what they hide."""
    return {
        "name": vm.name,
        "host": vm.host,
        "uuid": vm.uuid,
        "minutes": minutes,
        "resolution": history.resolution,
        "resolution_s": history.resolution_s,
        "count": len(history.points),
        "points": [_history_point(p) for p in history.points],
    }


def _history_point(p: HistoryPoint) -> dict[str, Any]:
    values = (
        p.cpu_percent,
        p.memory_percent,
        p.memory_used_mb,
        p.disk_read_bps,
        p.disk_write_bps,
        p.net_rx_bps,
        p.net_tx_bps,
    )
    return {
        "ts": iso_z(p.ts),
        **dict(zip(FIELDS, values, strict=True)),
        "samples": p.samples,
        **{f"{f}_max": peak for f, peak in zip(FIELDS, p.maxima, strict=True)},
    }


def event_view(event: VmEvent) -> dict[str, Any]:
    data = as_dict(event)
    data.pop("v", None)
    return data


def audit_view(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "ts": iso_z(entry.ts),
        "by": entry.by,
        "host": entry.host,
        "vm": entry.vm,
        "name": entry.name,
        "action": entry.action,
        "params": entry.params,
        "result": entry.result,
        "error": entry.error,
        "updated_at": iso_z(entry.updated_at),
        "finished_at": iso_z(entry.finished_at) if entry.finished_at else None,
        # The gateway's guess the agent's real outcome replaced (a timeout), else null.
        "revised": entry.revised,
    }
