"""The OpenAPI components: query parameters, and the response and body schemas of every route."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from gateway.core.history import MAX_POINTS
from shared.messages import VM_STATES, HostStatus, SnapshotInfo, VmEvent, VmMetrics
from shared.snapshots import SNAPSHOT_NAME_PATTERN, SNAPSHOT_TIMEOUT_S

REF = "#/components/schemas/{model}"


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _q(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


PARAMS: dict[str, dict[str, Any]] = {
    "host": _q(
        "host",
        "host_id: filters, or picks the VM when its name is on several hosts",
        {"type": "string"},
    ),
    "wait": _q(
        "wait",
        "seconds to wait for the job's end before answering 202 "
        "(default KVMSUP_DEFAULT_WAIT, at most KVMSUP_MAX_WAIT)",
        {"type": "number", "minimum": 0, "default": 10},
    ),
    "minutes": _q(
        "minutes",
        "window in minutes, at most the longest history kept: every tick up to "
        "KVMSUP_HISTORY_MINUTES, 1-minute points up to KVMSUP_HISTORY_1M_HOURS, 15-minute "
        "points up to KVMSUP_HISTORY_15M_DAYS",
        {"type": "number", "exclusiveMinimum": 0, "default": 10},
    ),
    "points": _q(
        "points",
        "most points returned: beyond it, the window is cut into this many equal intervals, "
        "each the average (and `*_max` the maximum) of its points",
        {"type": "integer", "minimum": 1, "maximum": MAX_POINTS, "default": MAX_POINTS},
    ),
    "limit": _q(
        "limit",
        "most items returned",
        {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
    ),
    # Filters, like `host` and `by`: a value that matches nothing gives an empty list.
    "status": _q(
        "status",
        "job status: pending, accepted, succeeded, failed, rejected or timed_out",
        {"type": "string"},
    ),
    "by": _q("by", "token name that sent the command", {"type": "string"}),
    "vm": _q("vm", "VM UUID or name", {"type": "string"}),
    "kind": _q(
        "kind",
        "event kind: lifecycle, reboot, command or agent",
        {"type": "string"},
    ),
    "action": _q("action", "agent action, or the route verb for a refusal", {"type": "string"}),
    "result": _q("result", "job status, or `refused`", {"type": "string"}),
}

_S, _N, _I, _B = {"type": "string"}, {"type": "number"}, {"type": "integer"}, {"type": "boolean"}


def _opt(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(props: dict[str, Any], required: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        **kw,
    }


def _list(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return _obj({"count": _I, key: {"type": "array", "items": item}})


_STATE = {"type": "string", "enum": list(VM_STATES)}
_SNAPSHOT_TIMEOUT = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": 3600,
    "default": SNAPSHOT_TIMEOUT_S,
    "description": "once begun, how long libvirt may take before the job is outcome_unknown",
}
_VM = _obj(
    {
        "name": _S,
        "state": _STATE,
        "vcpus": _I,
        "memory_mb": _I,
        "is_active": _B,
        "host": _S,
        "uuid": _S,
        "host_online": _B,
    }
)
_JOB = _obj(
    {
        "id": _S,
        "host": _S,
        "vm": _S,
        "name": _S,
        "action": _S,
        # A lifecycle action's, or a snapshot action's (`name`, `description`, `memory`).
        "params": _obj(
            {"timeout_s": _N, "force_after": _B, "name": _S, "description": _S, "memory": _B},
            required=[],
        ),
        "by": _S,
        "status": _S,
        "finished": _B,
        "state": _opt(_STATE),
        "changed": _opt(_B),
        "escalated": _opt(_B),
        "error": _opt(_obj({"code": _S, "message": _S})),
        "created_at": _S,
        "updated_at": _S,
        "accepted_at": _opt(_S),
        "finished_at": _opt(_S),
        "success": _B,
        "message": _S,
        # The gateway's own guess (a timeout, the host offline) that the agent's real outcome
        # replaced later; null when the job ended as first said.
        "revised": _opt({"type": "object"}),
    },
    required=["id", "host", "vm", "name", "action", "by", "status", "finished"],
)

_MODELS, _DEFS = models_json_schema(
    [
        (VmMetrics, "serialization"),
        (HostStatus, "serialization"),
        (VmEvent, "serialization"),
        (SnapshotInfo, "serialization"),
    ],
    ref_template=REF,
)

SCHEMAS: dict[str, Any] = {
    **_DEFS["$defs"],  # VmMetrics, HostStatus, VmEvent and their parts, from `shared`
    "Error": _obj({"error": _obj({"code": _S, "message": _S}, additionalProperties=True)}),
    "Empty": {"type": "object", "description": "Optional; no field is read"},
    "StopBody": _obj(
        {
            "force": {"type": "boolean", "default": False, "description": "true: destroy"},
            "timeout_s": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 3600,
                "default": 60,
                "description": "graceful shutdown only",
            },
            "force_after": {
                "type": "boolean",
                "default": False,
                "description": "destroy when the graceful shutdown times out",
            },
        },
        required=[],
        # `timeout_s` and `force_after` belong to a graceful shutdown: beside `force: true`
        # the gateway refuses them (400), and the document says so.
        anyOf=[
            {"properties": {"force": {"const": False}}},
            {"properties": {"timeout_s": False, "force_after": False}},
        ],
    ),
    "RestartBody": _obj(
        {"force": {"type": "boolean", "default": False, "description": "true: reset, else reboot"}},
        required=[],
    ),
    "Index": _obj(
        {
            "name": _S,
            "version": _S,
            "gateway_id": _S,
            "endpoints": {"type": "array", "items": _S},
            "auth": {"type": "string", "enum": ["bearer", "none"]},
        }
    ),
    "Health": _obj(
        {
            "status": {"type": "string", "enum": ["healthy", "degraded"]},
            "broker_connected": _B,
            "libvirt_connected": _B,
            "hosts_online": _I,
            "hosts_offline": _I,
            "gateway_id": _S,
            "timestamp": _S,
            "messages_dropped": {
                "type": "object",
                "additionalProperties": _I,
                "description": "MQTT messages (or parts) dropped since start, by reason",
            },
            "metrics_applied": _obj(
                {"batches": _I, "vm_metrics": _I},
                description="Metrics batches (and VM metrics in them) applied since start",
            ),
            "metrics_late": _obj(
                {"batches": _I, "vm_metrics": _I},
                description="Of those, applied more than two intervals after their ts",
            ),
            "ingest_queue": _obj(
                {"metrics_batches": _I, "metrics_bytes": _I, "other_messages": _I},
                description="What waits for the ingest now",
            ),
            "hosts": {
                "type": "array",
                "items": _obj({"host": _S, "online": _B, "libvirt_connected": _B}),
            },
        }
    ),
    "Summary": _obj(
        {
            "total_vms": _I,
            "running_vms": _I,
            "stopped_vms": _I,
            "paused_vms": _I,
            "states": _obj({s: _I for s in VM_STATES}),
            "total_vcpus": _I,
            "total_memory_mb": _I,
            "allocated_vcpus": _I,
            "allocated_memory_mb": _I,
            "used_memory_mb": _I,
            "avg_cpu_percent": _opt(_N),
            "hosts": _obj({"total": _I, "online": _I, "offline": _I}),
        }
    ),
    "Vm": _VM,
    "VmList": _list("vms", ref("Vm")),
    "VmDetail": {
        "allOf": [
            ref("Vm"),
            _obj(
                {
                    "reason": _S,
                    "max_memory_mb": _I,
                    "autostart": _B,
                    "persistent": _B,
                    "seq": _I,
                    "updated_at": _S,
                    "guest": _opt(ref("GuestBrief")),
                }
            ),
        ]
    },
    "History": _obj(
        {
            "name": _S,
            "host": _S,
            "uuid": _S,
            "minutes": _N,
            "resolution": {"type": "string", "enum": ["full", "1m", "15m"]},
            "resolution_s": _opt(_N),
            "count": _I,
            "points": {
                "type": "array",
                "items": _obj(
                    {
                        "ts": _S,
                        "cpu_percent": _opt(_N),
                        "memory_percent": _opt(_N),
                        "memory_used_mb": _opt(_I),
                        "disk_read_bps": _opt(_N),
                        "disk_write_bps": _opt(_N),
                        "net_rx_bps": _opt(_N),
                        "net_tx_bps": _opt(_N),
                        "samples": _I,
                        "cpu_percent_max": _opt(_N),
                        "memory_percent_max": _opt(_N),
                        "memory_used_mb_max": _opt(_I),
                        "disk_read_bps_max": _opt(_N),
                        "disk_write_bps_max": _opt(_N),
                        "net_rx_bps_max": _opt(_N),
                        "net_tx_bps_max": _opt(_N),
                    }
                ),
            },
        }
    ),
    "Job": _JOB,
    "JobList": _obj({"count": _I, "total": _I, "jobs": {"type": "array", "items": ref("Job")}}),
    "Host": {
        "allOf": [
            ref("HostStatus"),
            _obj({"vms_total": _I, "vms_running": _I, "metrics": _opt({"type": "object"})}),
        ]
    },
    "HostList": _list("hosts", ref("Host")),
    "EventList": _list("events", ref("VmEvent")),
    "AuditEntry": _obj(
        {
            "id": _S,
            "ts": _S,
            "by": _S,
            "host": _opt(_S),
            "vm": _opt(_S),
            "name": _opt(_S),
            "action": _S,
            "params": {"type": "object"},
            "result": _S,
            "error": _opt(_obj({"code": _S, "message": _S}, additionalProperties=True)),
            "updated_at": _S,
            "finished_at": _opt(_S),
            "revised": _opt({"type": "object"}),
        }
    ),
    "AuditList": _list("audit", ref("AuditEntry")),
    "OpenApi": {"type": "object", "description": "This document"},
    "Whoami": _obj(
        {
            "name": _S,
            "role": {"type": "string", "enum": ["viewer", "operator"]},
            "auth": {"type": "string", "enum": ["bearer", "none"]},
        }
    ),
    "Exposition": {"type": "string", "description": "Prometheus text format 0.0.4"},
    "SnapshotList": _obj(
        {
            "host": _S,
            "uuid": _S,
            "name": _S,
            "count": _I,
            "snapshots": {"type": "array", "items": ref("SnapshotInfo")},
            "updated_at": _opt(_S),
        }
    ),
    "SnapshotCreateBody": _obj(
        {
            "name": {"type": "string", "pattern": SNAPSHOT_NAME_PATTERN, "maxLength": 64},
            "description": {"type": "string", "maxLength": 1024, "default": ""},
            "memory": {
                "type": "boolean",
                "default": True,
                "description": "save a running guest's memory with its disks",
            },
            "timeout_s": _SNAPSHOT_TIMEOUT,
        },
        required=["name"],
        additionalProperties=False,
    ),
    "SnapshotConfirmBody": _obj(
        {
            "confirm": {"type": "string", "description": "the VM's name: this destroys state"},
            "timeout_s": _SNAPSHOT_TIMEOUT,
        },
        required=["confirm"],
        additionalProperties=False,
    ),
}
