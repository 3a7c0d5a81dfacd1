"""What the current request is to the gateway: the service its app was built with (the one way
REST, Socket.IO and metrics reach it) and the client's address."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app, request

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


def client_address() -> str:
    """The TCP peer of the current request. Behind a reverse proxy this is the proxy: every
    client behind it shares one address (documented in docs/API.md)."""
    return request.remote_addr or "unknown"
