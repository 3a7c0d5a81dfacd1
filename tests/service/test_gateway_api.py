"""The REST layer through Flask's test client, fed by the cache directly (no broker)."""

from __future__ import annotations

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
