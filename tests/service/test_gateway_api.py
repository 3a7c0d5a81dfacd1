"""The REST layer through Flask's test client, fed by the cache directly (no broker): an app
only built (unit) answers errors, roles, CORS and body limits; a started one, its agent played
by timers (service), answers jobs."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gateway.current import service_of
from gateway.service import Gateway
from shared.messages import CommandReply, CommandRequest
from tests.support.gateway_app import with_web_vm

pytestmark = pytest.mark.service

VIEWER = {"Authorization": "Bearer viewer-secret"}
OPERATOR = {"Authorization": "Bearer operator-secret"}


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return with_web_vm(make_app(accept_timeout=0.5, cors_origins="https://app.example"))


def agent_answers(gw: Gateway, *statuses: tuple[float, str]) -> list[CommandRequest]:
    sent: list[CommandRequest] = []

    def send(host: str, request: CommandRequest, expiry: int) -> None:
        sent.append(request)
        for delay, status in statuses:
            reply = CommandReply(
                id=request.id,
                host=host,
                status=status,  # type: ignore[arg-type]
                state="stopped",
            )
            threading.Timer(delay, gw.jobs.on_reply, args=(reply,)).start()

    gw.jobs._send = send
    gw.bus._connected.set()
    return sent


def test_late_end_is_202_with_location(app: Flask) -> None:
    gw: Gateway = service_of(app)
    agent_answers(gw, (0.01, "accepted"), (0.5, "succeeded"))
    client: FlaskClient = app.test_client()
    resp = client.post("/vm/web/stop?wait=0", headers=OPERATOR)
    assert resp.status_code == 202
    job = resp.get_json()
    assert resp.headers["Location"] == f"/jobs/{job['id']}"
    assert job["status"] == "accepted"
    again = client.post("/vm/web/start", headers=OPERATOR)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "job_in_progress"


def test_jobs_count_is_what_is_returned_and_total_what_matched(app: Flask) -> None:
    gw: Gateway = service_of(app)
    agent_answers(gw, (0.0, "accepted"), (0.0, "succeeded"))
    client = app.test_client()
    for verb in ("stop", "start", "stop"):
        assert client.post(f"/vm/web/{verb}", headers=OPERATOR).status_code == 200
    page = client.get("/jobs?limit=2", headers=VIEWER).get_json()
    assert (page["count"], len(page["jobs"]), page["total"]) == (2, 2, 3)
    mine = client.get("/jobs?by=o&limit=100", headers=VIEWER).get_json()
    assert (mine["count"], mine["total"]) == (3, 3)
    assert client.get("/jobs?by=nobody", headers=VIEWER).get_json()["total"] == 0


# -- unit (no I/O): an app only built --------------------------------------------------------------


@pytest.fixture
def built_app(make_app: Callable[..., Flask]) -> Flask:
    """The unit tests' app: built, never started (no broker connection, no thread)."""
    return with_web_vm(
        make_app(started=False, accept_timeout=0.5, cors_origins="https://app.example")
    )


@pytest.mark.unit
def test_errors_are_json_and_roles_hold(built_app: Flask) -> None:
    client = built_app.test_client()
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


@pytest.mark.unit
def test_broker_down_is_503(built_app: Flask) -> None:
    resp = built_app.test_client().post("/vm/web/start", headers=OPERATOR)
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "broker_unreachable"


@pytest.mark.unit
def test_cors_allows_exact_origins_only(built_app: Flask) -> None:
    client = built_app.test_client()
    ok = client.get("/health", headers={"Origin": "https://app.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.unit
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


@pytest.mark.unit
def test_a_body_over_the_limit_is_413_json_sized_or_chunked(make_app: Callable[..., Flask]) -> None:
    built_app = make_app(started=False, max_body_bytes=1024)
    client = built_app.test_client()
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
