"""The Socket.IO handlers (module-level in gateway.realtime.events) through Flask-SocketIO's test
client, on an app that is built but not started: no broker, no threads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask_socketio import SocketIOTestClient

from gateway.realtime.events import socketio
from tests.support.gateway_app import U, with_web_vm

pytestmark = pytest.mark.unit


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return with_web_vm(make_app(started=False, auth_fail_burst=100))


def client(app: Flask, token: str = "viewer-secret") -> SocketIOTestClient:
    return socketio.test_client(app, auth={"token": token})


def received(sio: SocketIOTestClient, event: str) -> list[Any]:
    return [m["args"][0] for m in sio.get_received() if m["name"] == event]


def test_connect_needs_a_valid_token(app: Flask) -> None:
    assert not socketio.test_client(app).is_connected()
    assert not client(app, "wrong-secret").is_connected()
    assert client(app).is_connected()


def test_request_vms_list_acks_the_count_and_emits_the_list(app: Flask) -> None:
    sio = client(app)
    sio.get_received()  # whatever the connect brought
    ack = sio.emit("request_vms_list", callback=True)
    assert ack == {"count": 1}
    [body] = received(sio, "vms_list")
    assert body["count"] == 1
    [vm] = body["vms"]
    assert vm["name"] == "web" and vm["host"] == "h1" and vm["state"] == "running"


@pytest.mark.parametrize(
    ("event", "data", "message"),
    [
        ("request_vms_list", [1, 2], "request_vms_list takes a JSON object"),
        ("request_metrics", {}, "name is required"),
        ("request_metrics", {"name": 7}, "name must be a non-empty string"),
        ("subscribe_metrics", {"name": "x" * 2000}, "name is longer than 1024 characters"),
    ],
)
def test_a_bad_payload_gets_its_error_ack_and_emit(
    app: Flask, event: str, data: Any, message: str
) -> None:
    sio = client(app)
    sio.get_received()
    ack = sio.emit(event, data, callback=True)
    assert ack["error"] == {"code": "bad_request", "message": message}
    assert ack["status"] == 400 and ack["event"] == event
    assert received(sio, "error") == [ack]
    assert sio.is_connected()  # a bad event costs the client nothing more


def test_an_unknown_vm_is_404_and_a_viewer_may_not_act(app: Flask) -> None:
    sio = client(app)
    sio.get_received()
    ack = sio.emit("request_metrics", {"name": "nope"}, callback=True)
    assert ack["status"] == 404 and ack["error"]["code"] == "not_found"
    ack = sio.emit("vm_action", {"name": "web", "action": "stop"}, callback=True)
    assert ack["status"] == 403 and ack["error"]["code"] == "forbidden"


def test_subscribing_to_a_vm_joins_its_stream(app: Flask) -> None:
    sio = client(app)
    ack = sio.emit("subscribe_metrics", {"name": "web"}, callback=True)
    assert ack == {"subscribed": "web", "host": "h1", "uuid": U}
    ack = sio.emit("unsubscribe_metrics", {}, callback=True)
    assert ack == {"unsubscribed": "*"}
