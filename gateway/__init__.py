"""KVM Supervisor gateway: REST + Socket.IO over an MQTT-fed cache of every host and VM."""

from __future__ import annotations

import atexit

from flask import Flask

from gateway.config import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app, its Socket.IO server and the gateway behind them, and connect."""
    from gateway import api, errors, openapi, prometheus, realtime
    from gateway.service import Gateway

    settings = settings or Settings()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # Werkzeug raises 413 when a body is read past this, Content-Length or chunked alike.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    gateway = Gateway(settings)
    app.extensions["kvmsup"] = gateway
    errors.init_app(app)
    api.init_app(app)
    prometheus.init_app(app)
    openapi.init_app(app)
    realtime.init_app(app, gateway)
    gateway.start()
    atexit.register(gateway.stop)
    return app
