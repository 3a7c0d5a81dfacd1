"""The snapshot routes of SPEC §4: a VM's snapshot list, and taking, reverting and deleting one
as jobs (audited, operator role); a revert or a delete names the VM in `confirm`."""

from __future__ import annotations

from flask import Blueprint, Flask, g, jsonify, request
from flask.typing import ResponseReturnValue

from gateway.current import service
from gateway.web.api import host_arg, json_body, read_body
from gateway.web.http_errors import outcome_status
from gateway.web.roles import require
from shared.messages import as_dict

bp = Blueprint("snapshots", __name__)


@bp.get("/vm/<name>/snapshots")
@require("viewer")
def list_snapshots(name: str) -> ResponseReturnValue:
    """The VM's snapshots as its agent last published them (none yet: an empty list)."""
    gateway = service()
    vm = gateway.cache.find(name, host_arg())
    held = gateway.cache.snapshots_of((vm.host, vm.uuid))
    items = [as_dict(s) for s in held.snapshots] if held is not None else []
    return jsonify(
        {
            "host": vm.host,
            "uuid": vm.uuid,
            "name": vm.name,
            "count": len(items),
            "snapshots": items,
            "updated_at": as_dict(held)["ts"] if held is not None else None,
        }
    )


def _run(name: str, action: str, snapshot: str | None) -> ResponseReturnValue:
    body = json_body(read_body())
    outcome = service().snapshot_command(
        name, host_arg(), action, snapshot, body, g.principal, request.args.get("wait")
    )
    headers = {"Location": f"/jobs/{outcome.job_id}"} if not outcome.finished else {}
    return jsonify(outcome.body), outcome_status(outcome), headers


@bp.post("/vm/<name>/snapshots")
@require("operator")
def create_snapshot(name: str) -> ResponseReturnValue:
    return _run(name, "snapshot_create", None)


@bp.post("/vm/<name>/snapshots/<snap>/revert")
@require("operator")
def revert_snapshot(name: str, snap: str) -> ResponseReturnValue:
    return _run(name, "snapshot_revert", snap)


@bp.delete("/vm/<name>/snapshots/<snap>")
@require("operator")
def delete_snapshot(name: str, snap: str) -> ResponseReturnValue:
    return _run(name, "snapshot_delete", snap)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
