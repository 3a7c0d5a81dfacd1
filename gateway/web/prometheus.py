"""`GET /metrics`: the gateway and its cache through prometheus_client's exposition."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from flask.typing import ResponseReturnValue
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gateway import blocking, stalls
from gateway.core.state import Snapshot
from gateway.current import service
from gateway.web.collectors import FleetCollector, GatewayCollector, GatewayFigures
from gateway.web.roles import require

bp = Blueprint("prometheus", __name__)


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    body: bytes | None = None
    waiters: int = 0


class SingleFlight:
    """Scrapes that arrive while one of the same format is being made wait for it and share it.

    At 10,000 VMs a scrape takes seconds of CPU and a few hundred MB while it is made (every
    sample, then the text): several scrapers at once (a Prometheus pair, a curious viewer) cost
    one scrape, not one each. A scrape that joins one under way gets figures taken shortly
    before it arrived; one arriving when none is under way makes its own, so scrapes one after
    the other always see fresh figures."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def waiting(self, key: str) -> int:
        """How many scrapes wait for the one under way (0 when none is)."""
        with self._guard:
            flight = self._flights.get(key)
            return flight.waiters if flight else 0

    def run(self, key: str, make: Callable[[], bytes]) -> bytes:
        with self._guard:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            else:
                flight.waiters += 1
        if not leader:
            flight.done.wait()
            if flight.body is None:  # the leader failed (and logged): try on our own
                return make()
            return flight.body
        try:
            flight.body = make()
            return flight.body
        finally:
            with self._guard:
                del self._flights[key]
            flight.done.set()


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
        late=gateway.drops.late_counts(),
        auth_failures=gateway.auth.failures(),
        stalls=stalls.MONITOR.figures(),
    )


@bp.get("/metrics")
@require("viewer")
def metrics() -> ResponseReturnValue:
    """Viewer role: the series name every VM, like `GET /vms`. Text format 0.0.4 unless the
    scraper asks for OpenMetrics (or text 1.0.0) in `Accept`, as prometheus_client negotiates."""
    gateway = service()
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    # Prometheus asks for gzip: a large fleet's text shrinks many times over at level 1, and
    # the higher levels cost far more CPU for little more.
    packed = request.accept_encodings["gzip"] > 0

    def render(reg: CollectorRegistry) -> bytes:
        body = encoder(reg)
        return gzip.compress(body, compresslevel=1) if packed else body

    def make() -> bytes:
        # Taken here, each under its owner's lock; collecting works on these copies.
        reg = registry(gateway.cache.snapshot(with_metrics=True), figures(gateway))
        # At 10,000 VMs building and rendering takes seconds of CPU: under gevent it runs on a
        # native thread, so the sockets of every other client keep being served meanwhile.
        return blocking.call(render, reg)

    flights: SingleFlight = current_app.extensions["kvmsup.scrapes"]
    body = flights.run(f"{content_type} gzip={packed}", make)
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    if packed:
        headers["Content-Encoding"] = "gzip"
    return Response(body, headers=headers)


def init_app(app: Flask) -> None:
    app.extensions["kvmsup.scrapes"] = SingleFlight()
    app.register_blueprint(bp)
