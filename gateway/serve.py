"""Production serving: gunicorn with ONE gevent worker (Socket.IO needs one worker)."""

from __future__ import annotations

import logging
import resource
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from gateway import create_app, start
from gateway.config import REST_CONNECTIONS, Settings

logger = logging.getLogger(__name__)

# File descriptors the worker needs besides its connections: listening socket, MQTT, SQLite
# (database, WAL, shared memory), logs, gevent's own.
SPARE_FDS = 64


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """`gunicorn -w 1 -k gevent` in-process. Every connection is a greenlet, so an idle or
    not-yet-authenticated websocket costs memory rather than one of a few threads.

    One worker only: several workers would each hold their own Socket.IO sessions, and without
    sticky routing a client's polling/upgrade requests land on a worker that does not know its
    session. Scale with more instances. The process must be monkey-patched before this module
    is imported (`gateway.__main__` does it first thing)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        connections = s.worker_connections()
        # Each websocket holds one descriptor; polling sessions may briefly hold two.
        raise_fd_limit(connections + SPARE_FDS, s.socket_limit() + REST_CONNECTIONS + SPARE_FDS)
        options: dict[str, Any] = {
            "bind": f"{s.host}:{s.port}",
            "workers": 1,
            "worker_class": "gevent",
            "worker_connections": connections,
            "graceful_timeout": 5,
            "timeout": 60,
            "accesslog": None,
            "control_socket_disable": True,  # several gateways may share a machine
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # Built and started in the worker, after the fork: the MQTT and Socket.IO greenlets
        # live there.
        app = create_app(self.settings)
        start(app)
        return app


def raise_fd_limit(wanted: int, needed: int) -> int:
    """Raise the soft open-files limit towards `wanted` (at most the hard limit): past it,
    accepting a connection fails, and the worker stops answering REST as well. Returns the
    limit in force; a warning says when it is below `needed` (one per allowed websocket)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-files limit to %d: %s", target, exc)
    if soft != resource.RLIM_INFINITY and soft < needed:
        logger.warning(
            "the open-files limit (%d) is below the %d KVMSUP_MAX_SOCKETS needs: "
            "raise it (LimitNOFILE=, ulimit -n) or lower KVMSUP_MAX_SOCKETS",
            soft,
            needed,
        )
    return int(soft)
