"""The REST API of SPEC §4: the seed routes with their shapes, hosts, jobs, events."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from gateway.adapters.bus import gateway_version
from gateway.core import views
from gateway.core.history import MAX_POINTS
from gateway.core.records import job_of
from gateway.current import service, service_of
from gateway.errors import InvalidInput, NotFound
from gateway.inputs import VERBS, query_number
from gateway.service import Gateway
from gateway.web.http_errors import outcome_status
from gateway.web.roles import require
from shared.messages import iso_z, utc_now

bp = Blueprint("api", __name__)


def gw() -> Gateway:
    return service()


def host_arg() -> str | None:
    return request.args.get("host") or None


@bp.get("/")
def index() -> ResponseReturnValue:
    return jsonify(
        {
            "name": "KVM Supervisor API",
            "version": gateway_version(),
            "gateway_id": gw().settings.gateway_id,
            "endpoints": [
                "GET /health",
                "GET /stats/summary",
                "GET /vms",
                "GET /vm/<name>",
                "GET /vm/<name>/metrics",
                "GET /vm/<name>/guest",
                "GET /guests",
                "GET /vm/<name>/history?minutes=&points=",
                *(f"POST /vm/<name>/{verb}" for verb in VERBS),
                "GET /vm/<name>/snapshots",
                "POST /vm/<name>/snapshots",
                "POST /vm/<name>/snapshots/<snapshot>/revert",
                "DELETE /vm/<name>/snapshots/<snapshot>",
                "GET /hosts",
                "GET /hosts/<host>",
                "GET /hosts/<host>/vms",
                "GET /jobs",
                "GET /jobs/<id>",
                "GET /events",
                "GET /audit",
                "GET /openapi.json",
                "GET /metrics",
            ],
            "auth": "none" if gw().auth.open else "bearer",
        }
    )


@bp.get("/health")
def health() -> ResponseReturnValue:
    gateway = gw()
    hosts = [
        {"host": h, "online": s.online, "libvirt_connected": bool(s.online and s.libvirt_connected)}
        for h, s in sorted(gateway.cache.hosts().items())
    ]
    queued = gateway.bus.queued()
    online = [h for h in hosts if h["online"]]
    broker = gateway.bus.connected
    healthy = broker and all(h["libvirt_connected"] for h in online)
    return jsonify(
        {
            "status": "healthy" if healthy else "degraded",
            "broker_connected": broker,
            "libvirt_connected": bool(online) and all(h["libvirt_connected"] for h in online),
            "hosts_online": len(online),
            "hosts_offline": len(hosts) - len(online),
            "hosts": hosts,
            "gateway_id": gateway.settings.gateway_id,
            # MQTT messages (or parts) dropped since start, by reason (docs/API.md).
            "messages_dropped": gateway.drops.by_reason(),
            # Metrics batches (and VM metrics in them) applied since start; of those, the ones
            # applied more than two intervals after they were taken; and what waits for the
            # ingest now. The last two grow when the gateway falls behind its fleet.
            "metrics_applied": dict(gateway.applied),
            "metrics_late": gateway.drops.late_counts(),
            "ingest_queue": {
                "metrics_batches": queued.metrics_batches,
                "metrics_bytes": queued.metrics_bytes,
                "other_messages": queued.other,
            },
            "timestamp": iso_z(utc_now()),
        }
    )


@bp.get("/stats/summary")
@require("viewer")
def stats_summary() -> ResponseReturnValue:
    return Response(gw().reads.summary_body(), mimetype="application/json")


@bp.get("/vms")
@require("viewer")
def list_vms() -> ResponseReturnValue:
    host = host_arg()
    if host is not None:
        return _vms_of(host)
    # The list only changes with a state or host message: the same bytes until then.
    return Response(gw().reads.vms_body(), mimetype="application/json")


@bp.get("/vm/<name>")
@require("viewer")
def vm_detail(name: str) -> ResponseReturnValue:
    gateway = gw()
    vm = gateway.cache.find(name, host_arg())
    guest = views.guest_brief(gateway.cache.guest_of((vm.host, vm.uuid)))
    return jsonify({**views.vm_detail(vm, gateway.cache.is_online(vm.host)), "guest": guest})


@bp.get("/vm/<name>/guest")
@require("viewer")
def vm_guest(name: str) -> ResponseReturnValue:
    cache = gw().cache
    vm = cache.find(name, host_arg())
    return jsonify(views.guest_detail(vm, cache.guest_of((vm.host, vm.uuid))))


@bp.get("/guests")
@require("viewer")
def guests() -> ResponseReturnValue:
    return jsonify(views.guests_list(gw().cache.snapshot(), host_arg()))


@bp.get("/vm/<name>/metrics")
@require("viewer")
def vm_metrics(name: str) -> ResponseReturnValue:
    cache = gw().cache
    vm = cache.find(name, host_arg())
    return jsonify(views.vm_metrics(vm, cache.metrics_of((vm.host, vm.uuid))))


@bp.get("/vm/<name>/history")
@require("viewer")
def vm_history(name: str) -> ResponseReturnValue:
    gateway = gw()
    longest = gateway.store.windows.longest
    minutes = _number("minutes", "10", float)
    if not 0 < minutes <= longest:  # NaN fails both
        raise InvalidInput(f"minutes must be in (0, {longest}]")
    # Always bounded: without `points`, a window of more than MAX_POINTS is averaged to it.
    limit = _number("points", str(MAX_POINTS), int)
    if not 1 <= limit <= MAX_POINTS:
        raise InvalidInput(f"points must be an integer in [1, {MAX_POINTS}]")
    vm = gateway.cache.find(name, host_arg())
    history = gateway.store.history(vm.host, vm.uuid, minutes, limit)
    return jsonify(views.history(vm, minutes, history))


def _number(name: str, default: str, kind: type[float] | type[int]) -> Any:
    return query_number(request.args.get(name, default), name, kind)


def json_body(raw: bytes) -> Any:
    """A command's optional body (`gateway.web.boundary` let only an `application/json` one
    through); empty or `null` is no body. Whether it is an object is the command's check
    (`command_of`)."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc


def read_body() -> bytes:
    """The raw bytes even for a form Content-Type (request.data would be empty), bounded.
    Werkzeug refuses a Content-Length over MAX_CONTENT_LENGTH itself, but a chunked body it
    only cuts at the limit, silently: a body that reaches the limit is refused here."""
    raw = request.get_data(cache=True)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is not None and len(raw) >= limit:
        raise RequestEntityTooLarge()
    return raw


def _command(name: str, verb: str) -> ResponseReturnValue:
    body = json_body(read_body())
    outcome = gw().command(name, host_arg(), verb, body, g.principal, request.args.get("wait"))
    headers = {"Location": f"/jobs/{outcome.job_id}"} if not outcome.finished else {}
    return jsonify(outcome.body), outcome_status(outcome), headers


for _verb in VERBS:
    bp.add_url_rule(
        f"/vm/<name>/{_verb}",
        f"vm_{_verb}",
        require("operator")(lambda name, _v=_verb: _command(name, _v)),
        methods=["POST"],
    )


@bp.get("/hosts")
@require("viewer")
def hosts() -> ResponseReturnValue:
    return Response(gw().reads.hosts_body(), mimetype="application/json")


@bp.get("/hosts/<host>")
@require("viewer")
def host_detail(host: str) -> ResponseReturnValue:
    snap = gw().cache.snapshot()
    status = snap.hosts.get(host)
    if status is None:
        raise NotFound(f"no host {host!r}", code="unknown_host")
    vms = [v for v in snap.vms.values() if v.host == host]
    return jsonify(views.host_view(status, snap.loads.get(host), vms))


@bp.get("/hosts/<host>/vms")
@require("viewer")
def host_vms(host: str) -> ResponseReturnValue:
    return _vms_of(host)


def _vms_of(host: str) -> ResponseReturnValue:
    """`GET /hosts/<host>/vms` and `GET /vms?host=`: the seed's list, of one host's VMs."""
    snap = gw().cache.snapshot()
    if host not in snap.hosts:
        raise NotFound(f"no host {host!r}", code="unknown_host")
    snap.vms = {k: v for k, v in snap.vms.items() if k[0] == host}
    return jsonify(views.vms_list(snap))


@bp.get("/jobs")
@require("viewer")
def jobs() -> ResponseReturnValue:
    jm = gw().jobs
    items = [jm.snapshot(j) for j in jm.all()]
    for key in ("host", "status", "by"):
        if request.args.get(key):
            items = [j for j in items if j[key] == request.args[key]]
    page = items[: _limit()]
    # `count` is what this answer holds, as on every other list; `total` is what matched.
    return jsonify({"count": len(page), "total": len(items), "jobs": page})


@bp.get("/jobs/<job_id>")
@require("viewer")
def job(job_id: str) -> ResponseReturnValue:
    gateway = gw()
    found = gateway.jobs.get(job_id)
    if found is not None:
        return jsonify(gateway.jobs.snapshot(found))
    # Older than the jobs kept in memory, or from an earlier run: its durable record.
    entry = gateway.store.job(job_id)
    if entry is None:
        raise NotFound(f"no job {job_id!r}", code="unknown_job")
    return jsonify(job_of(entry).to_dict())


@bp.get("/events")
@require("viewer")
def events() -> ResponseReturnValue:
    """What the agents report: lifecycle events and command outcomes, newest first."""
    items = gw().store.events(
        host=request.args.get("host"),
        vm=request.args.get("vm"),
        kind=request.args.get("kind"),
        limit=_limit(),
    )
    return jsonify({"count": len(items), "events": [views.event_view(e) for e in items]})


@bp.get("/audit")
@require("viewer")
def audit() -> ResponseReturnValue:
    """Every command the gateway handled (who, what, when, result), refusals too."""
    args = request.args
    items = gw().store.audit(
        limit=_limit(),
        vm=args.get("vm"),
        by=args.get("by"),
        host=args.get("host"),
        action=args.get("action"),
        result=args.get("result"),
    )
    return jsonify({"count": len(items), "audit": [views.audit_view(a) for a in items]})


def _limit() -> int:
    limit: int = query_number(request.args.get("limit", "100"), "limit", int)
    if not 1 <= limit <= 10000:
        raise InvalidInput("limit must be between 1 and 10000")
    return limit


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    origins = set(gw_settings_origins(app))

    @app.after_request
    def _cors(resp: Response) -> Response:
        """Exact origins only (SPEC §7); no header at all means same origin."""
        origin = request.headers.get("Origin")
        if origin and origin in origins:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            resp.headers["Vary"] = "Origin"
        return resp


def gw_settings_origins(app: Flask) -> list[str]:
    return service_of(app).settings.cors_list()
