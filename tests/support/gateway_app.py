"""A gateway app built in-process (Flask's and Flask-SocketIO's test clients), shared by the
unit tier (built only) and the service tests that start it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from gateway import create_app, start, stop
from gateway.config import Settings
from gateway.current import service_of
from shared.messages import HostStatus
from tests.support.vm_states import vm_state

TOKENS = "v:viewer:viewer-secret,o:operator:operator-secret"
U = "a0000000-0000-4000-8000-000000000001"  # the VM `web` of `with_web_vm`


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """`make_app(**settings)`: a gateway app on a dead broker port, its own DB, started as the
    server entry point does (`started=False`: only built, as the unit tier needs); stopped
    after."""
    made: list[Flask] = []

    def make(*, started: bool = True, **overrides: Any) -> Flask:
        fields: dict[str, Any] = {
            "db": str(tmp_path / "gateway.db"),
            "mqtt_url": "mqtt://127.0.0.1:9",
            "gateway_id": "gw-unit",
            "api_tokens": TOKENS,
            **overrides,
        }
        app = create_app(Settings(**fields))
        if started:
            start(app)
            made.append(app)
        return app

    yield make
    for app in made:
        stop(app)


def with_web_vm(app: Flask) -> Flask:
    """`app`'s cache fed directly (no broker): host `h1` online, its running VM `web` (`U`)."""
    gw = service_of(app)
    gw.handle(HostStatus(host="h1", online=True, libvirt_connected=True))
    gw.handle(vm_state("h1", U))
    return app
