"""Production serving: gunicorn with ONE worker and many threads (Socket.IO needs it)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from gateway import create_app
from gateway.config import Settings


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """`gunicorn -w 1 --threads N` in-process. Several workers would each hold their own
    Socket.IO sessions, and without sticky routing a client's polling/upgrade requests land
    on a worker that does not know its session: scale with more instances."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "bind": f"{s.host}:{s.port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": s.threads,
            "graceful_timeout": 5,
            "timeout": 60,
            "accesslog": None,
            "control_socket_disable": True,  # several gateways may share a machine
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # Built in the worker, after the fork: the MQTT threads must live there.
        return create_app(self.settings)
