"""The REST layer through Flask's test client, fed by the cache directly (no broker)."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from flask import Flask

from tests.support.gateway_app import with_web_vm

pytestmark = pytest.mark.unit

VIEWER = {"Authorization": "Bearer viewer-secret"}
OPERATOR = {"Authorization": "Bearer operator-secret"}


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return with_web_vm(
        make_app(started=False, accept_timeout=0.5, cors_origins="https://app.example")
    )


def test_errors_are_json_and_roles_hold(app: Flask) -> None:
    client = app.test_client()
    for path, headers, status in [
        ("/vms", {}, 401),
        ("/vms", VIEWER, 200),
        ("/nope", VIEWER, 404),
        ("/vm/ghost", VIEWER, 404),
    ]:
        resp = client.get(path, headers=headers)
        assert resp.status_code == status, path
        if status >= 400:
            assert set(resp.get_json()["error"]) >= {"code", "message"}
    assert client.post("/vm/web/stop", headers=VIEWER).status_code == 403
    assert client.delete("/vms", headers=VIEWER).get_json()["error"]["code"]


def test_broker_down_is_503(app: Flask) -> None:
    resp = app.test_client().post("/vm/web/start", headers=OPERATOR)
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "broker_unreachable"


def test_cors_allows_exact_origins_only(app: Flask) -> None:
    client = app.test_client()
    ok = client.get("/health", headers={"Origin": "https://app.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_json_body_reads_any_bytes_and_reports_bad_json() -> None:
    from gateway.errors import InvalidInput
    from gateway.web.api import json_body

    assert json_body(b"") is None and json_body(b" \n") is None and json_body(b"null") is None
    assert json_body(b'{"force": true}') == {"force": True}
    assert json_body('{"name": "café"}'.encode()) == {"name": "café"}
    assert json_body(b"[1]") == [1]  # not an object: the command refuses it (command_of)
    for raw in (b"{nope", b"\xff\xfe\xfd", b'{"a": 1} trailing'):
        with pytest.raises(InvalidInput, match="not valid JSON"):
            json_body(raw)


def test_a_body_over_the_limit_is_413_json_sized_or_chunked(make_app: Callable[..., Flask]) -> None:
    app = make_app(started=False, max_body_bytes=1024)
    client = app.test_client()
    resp = client.post("/vm/web/stop", headers=OPERATOR, data=b"{" + b" " * 5000 + b"}")
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "too_large"

    # Chunked: no Content-Length, a server that ends the stream itself (gunicorn says so
    # with wsgi.input_terminated); the stream is cut off at the limit all the same.
    resp = client.post(
        "/vm/web/stop",
        headers={**OPERATOR, "Transfer-Encoding": "chunked"},
        input_stream=io.BytesIO(b" " * 10_000),
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "too_large"
