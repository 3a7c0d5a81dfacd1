"""`GET /openapi.json`: the OpenAPI 3.1 document, built from Flask's own url map at runtime."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from gateway.adapters.bus import gateway_version
from gateway.adapters.history_db import Windows
from gateway.errors import InvalidInput
from gateway.web import dashboard
from gateway.web.openapi_guest import GUEST_SCHEMAS
from gateway.web.openapi_schemas import PARAMS, SCHEMAS, ref
from shared.snapshots import SNAPSHOT_NAME_PATTERN

bp = Blueprint("docs", __name__)
_S = {"type": "string"}

# Statuses every route may answer, and what each means (the body is always the Error schema).
ERRORS = {
    400: "Bad input (body, `?wait=`, `?minutes=`, `?points=`, `?limit=`, a query parameter "
    "given twice)",
    401: "No or unknown token",
    403: "The token's role is too low",
    404: "Unknown VM, host or job",
    409: "Ambiguous VM name (`candidates`), a job already running on the VM (`job`), or a "
    "snapshot revert or delete whose `confirm` is not the VM's name",
    413: "The request body is too large (KVMSUP_MAX_BODY_BYTES)",
    429: "Too many failed authentications from this address (`Retry-After` says when to retry)",
    503: "Host offline, broker unreachable or the job store unwritable; never queued",
    504: "The agent did not accept the command in time",
}
_RETRY_AFTER = {"schema": {"type": "integer"}, "description": "Seconds before trying again"}
# Answered by the HTTP server before the app sees the request, so in its own HTML, not the Error
# schema: gunicorn refuses a request line longer than 4094 bytes (a long name or query).
SERVER_ERRORS = {
    414: "Request line too long for the HTTP server (HTML body from the server itself)",
}


@dataclass(frozen=True)
class Doc:
    """What Flask cannot tell about a route. Paths, methods and roles come from the app."""

    summary: str
    response: str | dict[str, Any]  # a schema name in SCHEMAS, or a schema
    query: tuple[str, ...] = ()  # names in PARAMS
    errors: tuple[int, ...] = ()
    body: str | None = None
    media: str | tuple[str, ...] = "application/json"  # several: the 200 may be any of them
    extra: dict[str, Any] = field(default_factory=dict)
    links: dict[str, Any] = field(default_factory=dict)  # of the 200 answer; commands: the job
    path: dict[str, dict[str, Any]] = field(default_factory=dict)  # path parameters' schemas
    body_required: bool = False


def _link(operation: str, **params: str) -> dict[str, Any]:
    return {"operationId": operation, "parameters": params}


# OpenAPI links: how a client (or a stateful fuzzer) goes from one answer to the next request.
_FIRST_VM = {"name": "$response.body#/vms/0/name", "host": "$response.body#/vms/0/host"}
_VM_LINKS = {
    "vm": _link("vm_detail", **_FIRST_VM),
    "metrics": _link("vm_metrics", **_FIRST_VM),
    "history": _link("vm_history", **_FIRST_VM),
    "snapshots": _link("list_snapshots", **_FIRST_VM),
    "take_snapshot": _link("create_snapshot", **_FIRST_VM),
    "guest": _link("vm_guest", **_FIRST_VM),
}


def _snapshot_link(operation: str, vm: str, host: str, snap: str) -> dict[str, Any]:
    """To a revert or a delete, with the confirmation it needs (the VM's name)."""
    return {**_link(operation, name=vm, host=host, snap=snap), "requestBody": {"confirm": vm}}


# From a VM's list to its first snapshot; from a taken snapshot's job to that snapshot.
_SNAPSHOT_LINKS = {
    op: _snapshot_link(
        op, "$response.body#/name", "$response.body#/host", "$response.body#/snapshots/0/name"
    )
    for op in ("revert_snapshot", "delete_snapshot")
}
_TAKEN_LINKS = {
    op: _snapshot_link(
        op, "$response.body#/name", "$response.body#/host", "$response.body#/params/name"
    )
    for op in ("revert_snapshot", "delete_snapshot")
}
_HOST_LINKS = {
    "host": _link("host_detail", host="$response.body#/hosts/0/host"),
    "vms": _link("host_vms", host="$response.body#/hosts/0/host"),
}
_JOB_LINK = {"job": _link("job", job_id="$response.body#/id")}

_CMD_ERRORS = (400, 404, 409, 413, 503, 504)
# Inline rather than a $ref, so a tool reading the document sees a plain string body.
_TEXT: dict[str, Any] = {"type": "string"}
_VM_ERRORS = (404, 409)
_SNAP_PATH = {"snap": {"type": "string", "pattern": SNAPSHOT_NAME_PATTERN, "maxLength": 64}}

# Keyed by Flask endpoint; a test checks it matches `app.url_map` both ways.
ROUTES: dict[str, Doc] = {
    "api.index": Doc("API information", "Index"),
    "api.health": Doc("Broker, hosts and libvirt connectivity (always 200)", "Health"),
    "api.stats_summary": Doc("Hosts, VMs per state, vCPUs and memory", "Summary"),
    "api.list_vms": Doc("Every VM on every host", "VmList", ("host",), (404,), links=_VM_LINKS),
    "api.vm_detail": Doc("One VM", "VmDetail", ("host",), _VM_ERRORS),
    "api.vm_metrics": Doc("A VM's latest metrics", "VmMetrics", ("host",), _VM_ERRORS),
    "api.vm_guest": Doc(
        "What the VM's guest agent says: addresses, OS, hostname, filesystems",
        "Guest",
        ("host",),
        _VM_ERRORS,
    ),
    "api.guests": Doc("Every VM's addresses, OS and hostname", "GuestList", ("host",)),
    "api.vm_history": Doc(
        "A VM's metrics history", "History", ("host", "minutes", "points"), (400, *_VM_ERRORS)
    ),
    "api.vm_start": Doc("Start a VM", "Job", ("host", "wait"), _CMD_ERRORS, "Empty"),
    "api.vm_stop": Doc(
        "Shut a VM down (graceful), or destroy it with force",
        "Job",
        ("host", "wait"),
        _CMD_ERRORS,
        "StopBody",
    ),
    "api.vm_restart": Doc(
        "Reboot a VM, or reset it with force",
        "Job",
        ("host", "wait"),
        _CMD_ERRORS,
        "RestartBody",
    ),
    "api.vm_suspend": Doc("Pause a VM", "Job", ("host", "wait"), _CMD_ERRORS, "Empty"),
    "api.vm_resume": Doc("Resume a paused VM", "Job", ("host", "wait"), _CMD_ERRORS, "Empty"),
    "snapshots.list_snapshots": Doc(
        "A VM's snapshots, oldest first",
        "SnapshotList",
        ("host",),
        _VM_ERRORS,
        links=_SNAPSHOT_LINKS,
    ),
    "snapshots.create_snapshot": Doc(
        "Take a snapshot (with a running guest's memory unless `memory` is false)",
        "Job",
        ("host", "wait"),
        _CMD_ERRORS,
        "SnapshotCreateBody",
        links=_TAKEN_LINKS,
        body_required=True,
    ),
    "snapshots.revert_snapshot": Doc(
        "Go back to a snapshot; `confirm` must be the VM's name",
        "Job",
        ("host", "wait"),
        _CMD_ERRORS,
        "SnapshotConfirmBody",
        path=_SNAP_PATH,
        body_required=True,
    ),
    "snapshots.delete_snapshot": Doc(
        "Delete a snapshot; `confirm` must be the VM's name",
        "Job",
        ("host", "wait"),
        _CMD_ERRORS,
        "SnapshotConfirmBody",
        path=_SNAP_PATH,
        body_required=True,
    ),
    "api.hosts": Doc("Every host", "HostList", links=_HOST_LINKS),
    "api.host_detail": Doc("One host", "Host", errors=(404,)),
    "api.host_vms": Doc("The VMs of one host", "VmList", errors=(404,)),
    "api.jobs": Doc(
        "Commands as jobs, newest first (this run)",
        "JobList",
        ("host", "status", "by", "limit"),
        (400,),
    ),
    "api.job": Doc("One job", "Job", errors=(404,)),
    "api.events": Doc(
        "Agent events (lifecycle, commands), newest first",
        "EventList",
        ("host", "vm", "kind", "limit"),
        (400,),
    ),
    "api.audit": Doc(
        "Every command the gateway handled, refusals too, newest first",
        "AuditList",
        ("host", "vm", "by", "action", "result", "limit"),
        (400,),
    ),
    "docs.openapi": Doc("This document", "OpenApi"),
    "dashboard.whoami": Doc("The token's name and role", "Whoami"),
    "dashboard.page": Doc("The operator dashboard", _TEXT, media="text/html; charset=utf-8"),
    "dashboard.asset": Doc(
        "A file of the dashboard (module, style sheet, vendored library, licence)",
        _TEXT,
        errors=(404,),
        media=(
            "text/javascript; charset=utf-8",
            "text/css; charset=utf-8",
            "text/html; charset=utf-8",
            "text/plain; charset=utf-8",
        ),
        path={"asset": {"type": "string", "enum": dashboard.files()}},
    ),
    "prometheus.metrics": Doc(
        "Prometheus text exposition (version 0.0.4)",
        "Exposition",
        media="text/plain; version=0.0.4",
    ),
}


def openapi_path(rule: str) -> str:
    """Flask's `/vm/<name>` (or `<string:name>`) as OpenAPI's `/vm/{name}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _bounded(params: dict[str, dict[str, Any]], app: Flask) -> dict[str, dict[str, Any]]:
    """The query parameters with this gateway's configured maxima: a client (or a fuzzer) then
    reads from the document which `?wait=` or `?minutes=` the server refuses with a 400."""
    settings = getattr(app.extensions.get("kvmsup"), "settings", None)
    if settings is None:
        return params
    longest = Windows.of(
        settings.history_minutes, settings.history_1m_hours, settings.history_15m_days
    ).longest
    caps = {"wait": settings.max_wait, "minutes": longest}
    bounded = dict(params)
    for name, cap in caps.items():
        param = bounded[name]
        bounded[name] = {**param, "schema": {**param["schema"], "maximum": cap}}
    return bounded


def _operation(
    endpoint: str,
    doc: Doc,
    role: str | None,
    path_args: list[str],
    method: str,
    params_by_name: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    params = [
        {
            "name": a,
            "in": "path",
            "required": True,
            "schema": doc.path.get(a, {"type": "string"}),
            "description": "VM name (URL-encoded) or UUID" if a == "name" else a,
        }
        for a in path_args
    ] + [params_by_name[q] for q in doc.query]
    medias = (doc.media,) if isinstance(doc.media, str) else doc.media
    schema = doc.response if isinstance(doc.response, dict) else ref(doc.response)
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {m: {"schema": schema} for m in medias}},
    }
    if doc.links:
        responses["200"]["links"] = doc.links
    if method in ("POST", "DELETE"):
        responses["200"]["description"] = "The job finished within `?wait=`"
        responses["200"]["links"] = {**_JOB_LINK, **doc.links}
        responses["202"] = {
            "description": "Still running: poll the Location",
            "headers": {"Location": {"schema": {"type": "string"}, "description": "/jobs/{id}"}},
            "content": {"application/json": {"schema": ref("Job")}},
            "links": _JOB_LINK,
        }
    auth = {401, 403, 429} if role else set()
    statuses = set(doc.errors) | auth | ({400} if doc.query else set())
    for status in sorted(statuses | set(SERVER_ERRORS)):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    op: dict[str, Any] = {
        "operationId": endpoint.split(".", 1)[1],
        "summary": doc.summary,
        "parameters": params,
        "responses": responses,
        "security": [{"bearer": []}] if role else [],
        **doc.extra,
    }
    if role:
        op["x-required-role"] = role
    if doc.body and doc.body_required:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(doc.body)}},
        }
    elif doc.body:
        # Optional, as in the seed: no body, an empty one or `null` all mean the defaults.
        body = {"anyOf": [ref(doc.body), {"type": "null"}]}
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return op


def document(app: Flask) -> dict[str, Any]:
    """Every url rule of the app (but `static`) with its ROUTES entry; KeyError when missing."""
    paths: dict[str, dict[str, Any]] = {}
    params = _bounded(PARAMS, app)
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        doc = ROUTES[rule.endpoint]
        role = getattr(app.view_functions[rule.endpoint], "required_role", None)
        item = paths.setdefault(openapi_path(rule.rule), {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            item[method.lower()] = _operation(
                rule.endpoint, doc, role, sorted(rule.arguments), method, params
            )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "KVM Supervisor API",
            "version": gateway_version(),
            "description": "The seed backend's routes over an MQTT-fed cache of every KVM "
            "host; commands are jobs. Socket.IO on the same port is not "
            "described here (see docs/API.md).",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "KVMSUP_API_TOKENS; role viewer for reads, operator for "
                    "commands (x-required-role)",
                }
            },
            "schemas": {**SCHEMAS, **GUEST_SCHEMAS},
            "responses": {
                f"E{status}": {
                    "description": text,
                    "content": {"application/json": {"schema": ref("Error")}},
                    **({"headers": {"Retry-After": _RETRY_AFTER}} if status == 429 else {}),
                }
                for status, text in ERRORS.items()
            }
            | {
                f"E{status}": {"description": text, "content": {"text/html": {"schema": _S}}}
                for status, text in SERVER_ERRORS.items()
            },
        },
        "security": [{"bearer": []}],
    }


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    """Public, like `/`: it describes the API, never the fleet."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    cached = app.extensions.get("kvmsup_openapi")
    if cached is None:
        cached = app.extensions["kvmsup_openapi"] = document(app)
    return jsonify(cached)


def _single_valued_query() -> None:
    """Every documented query parameter takes one value: `?wait=1&wait=500` is refused rather
    than read as its first value, which a proxy or a client library may see differently."""
    doc = ROUTES.get(request.endpoint or "")
    if doc is None:
        return
    for name in doc.query:  # others are ignored, as any unknown parameter is
        if len(request.args.getlist(name)) > 1:
            raise InvalidInput(f"query parameter {name!r} given more than once")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.before_request(_single_valued_query)
