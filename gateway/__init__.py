"""KVM Supervisor gateway: REST + Socket.IO over an MQTT-fed cache of every host and VM.

`create_app(settings)` builds the app and binds the extensions, with no side effect: no socket,
no thread, no exit hook. `start(app)` (the server entry points call it: gateway.serve's worker
load and `python -m gateway --dev`) connects to MQTT and starts the background threads.

Beside the packages (`core`, `adapters`, `web`, `realtime`), the top-level modules: `service`
(the wiring), `auth` (tokens and roles), `inputs` (checks of what a client sends), `current`
(the request's service and client address), `errors`, `config`, `throttle`, `blocking`,
`stalls` (the event loop's stalls), and the entry points `__main__` and `serve`.

May import: `shared`, `gateway.core`, `gateway.adapters` and each other; never Flask, werkzeug
or Socket.IO, nor `gateway.web` or `gateway.realtime`, except in `current` (Flask's request)
and in the entry points (`create_app` here, `__main__`, `serve`), which compose every layer.
"""

from __future__ import annotations

import atexit
from typing import TYPE_CHECKING

# Nothing else at import time: `python -m gateway` imports this package before its entry runs,
# and the production entry must monkey-patch for gevent before ssl, socket or threading users
# (Flask pulls in http.client, which imports ssl) are loaded.
if TYPE_CHECKING:
    from flask import Flask

    from gateway.config import Settings
    from gateway.service import Gateway


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app, bind its Socket.IO server and the gateway service behind them."""
    from flask import Flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    from gateway.config import Settings
    from gateway.current import KEY
    from gateway.realtime import events as realtime
    from gateway.service import Gateway
    from gateway.web import api, boundary, dashboard, http_errors, openapi, prometheus, snapshots

    settings = settings or Settings()
    app = Flask(__name__)
    # Werkzeug raises 413 when a body is read past this, Content-Length or chunked alike.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions[KEY] = Gateway(settings)
    http_errors.init_app(app)
    boundary.init_app(app)
    api.init_app(app)
    snapshots.init_app(app)
    prometheus.init_app(app)
    openapi.init_app(app)
    dashboard.init_app(app)
    realtime.init_app(app, settings)
    if settings.trusted_proxies:
        # Outermost, so the Socket.IO session guard and the auth throttle both see the client's
        # address from X-Forwarded-For instead of the proxy's.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )
    return app


def start(app: Flask) -> Gateway:
    """Connect `app`'s gateway to MQTT and start its threads: store writer, job janitor, bus
    (paho and ingest), Socket.IO bridge and session reaper. Stopped at exit, or by `stop`."""
    from gateway import stalls
    from gateway.current import service_of
    from gateway.realtime import events as realtime

    stalls.install()  # on the loop's own thread; nothing outside gevent
    gateway = service_of(app)
    gateway.start()
    realtime.start(app)
    atexit.register(stop, app)
    return gateway


def serve_app(settings: Settings | None = None) -> Flask:
    """`create_app` then `start`: the app a WSGI server loads by name (gunicorn's
    `'gateway:serve_app()'`), in the worker process that will serve it."""
    app = create_app(settings)
    start(app)
    return app


def stop(app: Flask) -> None:
    """Say goodbye on MQTT, stop the bus, the job janitor and the store writer (the emit bridge
    and the session reaper are daemons that end with the process)."""
    from gateway.current import service_of

    service_of(app).stop()
