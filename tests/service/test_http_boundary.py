"""The HTTP boundary as a browser meets it: a cross-site page cannot run a command through a
visitor's browser, a DNS-rebinding name is refused, bodies are JSON only, and FLASK_DEBUG never
starts Werkzeug's debugger. Raw requests, as a hostile page or client would send them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from tests.service.conftest import wait_ready
from tests.support.gateway import GatewayProc, wait_until
from tests.support.procs import Service

pytestmark = pytest.mark.service

EVIL = "http://evil.example"


def state(gw: GatewayProc, name: str) -> str:
    st: str = gw.get(f"/vm/{name}", token=None).json()["state"]
    return st


def error_code(resp: requests.Response) -> str:
    code: str = resp.json()["error"]["code"]
    return code


def test_a_cross_site_page_cannot_run_a_command_when_the_api_runs_open(
    demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc]
) -> None:
    gw = start_gateway(KVMSUP_AUTH="none", KVMSUP_API_TOKENS="")
    wait_ready(gw)
    assert state(gw, "web-01") == "running"
    # A form or fetch() with a "simple" type needs no preflight: the browser sends it, with
    # its Origin. And JSON from a foreign origin (a browser would have asked first).
    for kind, headers, body in (
        ("simple", {"Content-Type": "text/plain"}, b'{"force":true}'),
        ("json", {"Content-Type": "application/json"}, b'{"force":true}'),
    ):
        resp = gw.post(
            "/vm/web-01/stop", token=None, data=body, headers={**headers, "Origin": EVIL}
        )
        assert resp.status_code == 403, (kind, resp.text)
        assert error_code(resp) == "origin_not_allowed"
        assert "evil.example" in resp.json()["error"]["message"]
    assert gw.get("/jobs", token=None).json()["count"] == 0  # nothing was even tried
    assert state(gw, "web-01") == "running"
    # The page's own origin (the dashboard) and a client without Origin (curl, the app) work.
    same = gw.post("/vm/backup/start", token=None, json={}, headers={"Origin": gw.url})
    assert same.status_code == 200 and same.json()["status"] == "succeeded", same.text
    plain = gw.post("/vm/backup/stop", token=None, json={"force": True})
    assert plain.status_code == 200 and plain.json()["action"] == "destroy", plain.text


def test_a_body_must_be_json_in_every_mode_and_an_empty_one_needs_no_type(
    gateway: GatewayProc,
) -> None:
    for content_type, body in (
        ("text/plain", b'{"force":true}'),
        ("application/x-www-form-urlencoded", b"force=true"),  # `curl -d` without -H
        ("multipart/form-data; boundary=x", b"--x--"),
    ):
        resp = gateway.post("/vm/web-01/stop", data=body, headers={"Content-Type": content_type})
        assert resp.status_code == 415, (content_type, resp.text)
        assert error_code(resp) == "unsupported_media_type"
        assert content_type.split(";")[0] in resp.json()["error"]["message"]
    assert gateway.get("/jobs").json()["count"] == 0
    # The seed's curl lines: no body at all, and a JSON one; the same keep-alive connection.
    assert gateway.post("/vm/backup/start").json()["status"] == "succeeded"
    resp = gateway.post("/vm/backup/stop", json={"force": True})
    assert resp.status_code == 200 and resp.json()["action"] == "destroy"


def test_a_dns_rebinding_name_is_refused_when_the_api_runs_open(
    demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc]
) -> None:
    gw = start_gateway(KVMSUP_AUTH="none", KVMSUP_API_TOKENS="")
    wait_ready(gw)
    rebound = requests.get(gw.url + "/vms", headers={"Host": f"evil.example:{gw.port}"}, timeout=5)
    assert rebound.status_code == 400 and error_code(rebound) == "host_not_allowed"
    assert "KVMSUP_ALLOWED_HOSTS" in rebound.json()["error"]["message"]
    for host in (f"127.0.0.1:{gw.port}", f"localhost:{gw.port}", f"[::1]:{gw.port}"):
        resp = requests.get(gw.url + "/vms", headers={"Host": host}, timeout=5)
        assert resp.status_code == 200, (host, resp.text)

    listed = start_gateway(
        KVMSUP_AUTH="none", KVMSUP_API_TOKENS="", KVMSUP_ALLOWED_HOSTS="kvm.example"
    )
    wait_ready(listed)
    ok = requests.get(listed.url + "/vms", headers={"Host": "KVM.example"}, timeout=5)
    assert ok.status_code == 200
    other = requests.get(listed.url + "/vms", headers={"Host": "evil.example"}, timeout=5)
    assert other.status_code == 400 and error_code(other) == "host_not_allowed"


def test_flask_debug_never_starts_the_interactive_debugger(
    demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc]
) -> None:
    gw = start_gateway(FLASK_DEBUG="1")
    wait_ready(gw)
    console = requests.get(gw.url + "/console", timeout=5)
    assert console.status_code == 404 and error_code(console) == "not_found"
    resource = requests.get(
        gw.url + "/vms",
        params={"__debugger__": "yes", "cmd": "resource", "f": "debugger.js"},
        headers=gw.headers(gw.tokens.viewer),
        timeout=5,
    )
    assert resource.headers["Content-Type"].startswith("application/json")
    # Still what the setting says: the development server.
    wait_until(lambda: "(Werkzeug, development)" in gw.service.output(), timeout=10)
    assert "Debugger is active" not in gw.service.output()
