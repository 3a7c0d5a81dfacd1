"""The one way to reach the gateway service an app was built with (REST, Socket.IO, metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    from gateway.service import Gateway

KEY = "kvmsup"  # the app.extensions entry `create_app` binds


def service_of(app: Flask) -> Gateway:
    """The gateway service bound to `app`."""
    gateway: Gateway = app.extensions[KEY]
    return gateway


def service() -> Gateway:
    """The gateway service of the app handling the current request or Socket.IO event."""
    return service_of(current_app)
