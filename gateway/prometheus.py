"""`GET /metrics`: the gateway and its cache through prometheus_client's exposition."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from flask.typing import ResponseReturnValue
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gateway import blocking
from gateway.auth import require
from gateway.collectors import FleetCollector, GatewayCollector, GatewayFigures
from gateway.state import Snapshot

bp = Blueprint("prometheus", __name__)


def registry(snap: Snapshot, figures: GatewayFigures) -> CollectorRegistry:
    """One scrape's registry: collectors over data already taken, so collecting needs no lock.
    (A registry per scrape costs nothing and keeps apps built side by side in tests apart.)"""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(GatewayCollector(figures))
    reg.register(FleetCollector(snap))
    return reg


def figures(gateway: Any) -> GatewayFigures:
    counts, in_flight = gateway.jobs.stats()
    return GatewayFigures(
        gateway_id=gateway.settings.gateway_id,
        mqtt_connected=gateway.bus.connected,
        job_counts=counts,
        jobs_in_flight=in_flight,
        job_revisions=gateway.jobs.revision_counts(),
        dropped=gateway.drops.by_reason(),
        auth_failures=gateway.auth.failures(),
    )


@bp.get("/metrics")
@require("viewer")
def metrics() -> ResponseReturnValue:
    """Viewer role: the series name every VM, like `GET /vms`. Text format 0.0.4 unless the
    scraper asks for OpenMetrics (or text 1.0.0) in `Accept`, as prometheus_client negotiates."""
    gateway = current_app.extensions["kvmsup"]
    # Taken here, each under its owner's lock, in one go; the rest works on these copies.
    reg = registry(gateway.cache.snapshot(with_metrics=True), figures(gateway))
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    # At 10,000 VMs building and rendering a scrape takes CPU-seconds: under gevent it runs on a
    # native thread, so the sockets of every other client keep being served meanwhile.
    body = blocking.call(encoder, reg)
    return Response(body, headers={"Content-Type": content_type})


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
