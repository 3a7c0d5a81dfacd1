"""KVM Supervisor gateway: REST + Socket.IO over an MQTT-fed cache of every host and VM."""

from __future__ import annotations

import atexit
from typing import TYPE_CHECKING

# Nothing else at import time: `python -m gateway` imports this package before its entry runs,
# and the production entry must monkey-patch for gevent before ssl, socket or threading users
# (Flask pulls in http.client, which imports ssl) are loaded.
if TYPE_CHECKING:
    from flask import Flask

    from gateway.config import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app, its Socket.IO server and the gateway behind them, and connect."""
    from flask import Flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    from gateway import api, dashboard, errors, openapi, prometheus, realtime
    from gateway.config import Settings
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
    dashboard.init_app(app)
    realtime.init_app(app, gateway)
    if settings.trusted_proxies:
        # Outermost, so the Socket.IO session guard and the auth throttle both see the client's
        # address from X-Forwarded-For instead of the proxy's.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )
    gateway.start()
    atexit.register(gateway.stop)
    return app
