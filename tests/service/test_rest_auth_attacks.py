"""REST authentication attacks against the gateway process: tokens in URLs, guessing, and what
the log and /metrics show of them (SPEC §7)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import wait_ready
from tests.support.gateway import GatewayProc, wait_until
from tests.support.procs import Service
from tests.support.rawsio import RawSio, connect_error

pytestmark = pytest.mark.service

BURST = 3


def get_from(
    gw: GatewayProc, source: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, object]]:
    """A GET from another loopback address: the throttle is per client address."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=15, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = json.loads(resp.read() or b"{}")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def failures(gw: GatewayProc, transport: str, reason: str) -> int:
    text = gw.get("/metrics").text
    found = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "kvmsup_gateway_auth_failures_total"
        and (s.labels["transport"], s.labels["reason"]) == (transport, reason)
    ]
    assert len(found) == 1, text[-2000:]
    return int(found[0])


@pytest.fixture
def gw(demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc]) -> GatewayProc:
    # One token a minute after the burst: a throttled address stays throttled for the test.
    g = start_gateway(KVMSUP_AUTH_FAIL_BURST=str(BURST), KVMSUP_AUTH_FAIL_PER_MINUTE="1")
    wait_ready(g)
    return g


def test_a_token_in_the_query_string_is_not_accepted_on_rest(gw: GatewayProc) -> None:
    resp = gw.get("/vms", params={"token": gw.tokens.viewer}, token=None)
    assert resp.status_code == 401
    assert "Socket.IO handshake only" in resp.json()["error"]["message"]
    assert gw.tokens.viewer not in resp.text
    assert gw.get("/vms").status_code == 200  # the header still works


def test_guessing_is_throttled_per_address_on_both_transports(gw: GatewayProc) -> None:
    attacker = "127.0.0.2"
    for i in range(BURST):
        status, _, body = get_from(gw, attacker, "/vms", {"Authorization": f"Bearer guess-{i}-abc"})
        assert status == 401, body
    # Now even the right token is refused unchecked, with a Retry-After.
    good = {"Authorization": f"Bearer {gw.tokens.viewer}"}
    status, headers, body = get_from(gw, attacker, "/vms", good)
    assert status == 429, body
    assert body["error"]["code"] == "too_many_requests"  # type: ignore[index]
    assert 0 < int(headers["retry-after"]) <= 60
    # ... on Socket.IO too, from that address
    raw = RawSio(gw.port, source=attacker)
    try:
        err = connect_error(raw.connect({"token": gw.tokens.viewer}))
        assert err["data"]["code"] == "too_many_requests" and err["data"]["retry_after"] > 0
        assert raw.wait_closed(10)
    finally:
        raw.close()
    # Other addresses are not affected.
    assert get_from(gw, "127.0.0.3", "/vms", good)[0] == 200
    assert gw.get("/vms").status_code == 200
    # Counted in /metrics, logged without the secrets.
    assert failures(gw, "rest", "unknown") == BURST
    assert failures(gw, "rest", "throttled") == 1
    assert failures(gw, "socketio", "throttled") == 1
    out = gw.service.output()
    assert out.count(f"failed authentication (unknown token) on rest from {attacker}") == BURST
    assert f"{attacker} is refused for" in out
    for secret in [f"guess-{i}-abc" for i in range(BURST)] + [gw.tokens.viewer]:
        assert secret not in out


def test_malformed_and_missing_credentials(gw: GatewayProc) -> None:
    status, _, body = get_from(gw, "127.0.0.4", "/vms", {"Authorization": "Basic YWxpY2U6cHc="})
    assert status == 401, body
    assert failures(gw, "rest", "malformed") == 1
    # No credential at all is not a guess: counted, never throttled.
    for _ in range(BURST + 2):
        assert get_from(gw, "127.0.0.5", "/vms")[0] == 401
    assert failures(gw, "rest", "missing") == BURST + 2
    assert "127.0.0.5 is refused" not in gw.service.output()


def test_socketio_failures_are_logged_and_counted(gw: GatewayProc) -> None:
    raw = RawSio(gw.port, source="127.0.0.6")
    try:
        connect_error(raw.connect({"token": 12345}))
    finally:
        raw.close()
    assert failures(gw, "socketio", "malformed") == 1
    wait_until(
        lambda: (
            "failed authentication (malformed token) on socketio from 127.0.0.6"
            in gw.service.output()
        )
    )


def test_token_entries_in_the_wrong_order_do_not_echo_the_secret(
    tmp_path: Path, broker_url_for_startup: str
) -> None:
    secret = "s3cret-value-do-not-print"
    log = tmp_path / "gw.log"
    for entries in (f"alice:{secret}:viewer", f"{secret}:alice:operator", "alice:viewer:short"):
        gw = GatewayProc(tmp_path, broker_url_for_startup, gateway_id="gw-bad")
        gw.service.env["KVMSUP_API_TOKENS"] = entries
        gw.service.log = log
        gw.service.start()
        try:
            assert gw.service.proc is not None
            code = gw.service.proc.wait(timeout=30)  # refuses to start
        finally:
            gw.stop()
        out = log.read_text()
        assert code == 2, out[-2000:]
        assert "token entry 1" in out and "Traceback" not in out, out[-2000:]
        assert secret not in out and "short" not in out.replace("shorter", "")


@pytest.fixture
def broker_url_for_startup() -> str:
    """The gateway refuses its tokens before it ever reaches a broker."""
    return "mqtt://127.0.0.1:9"


@pytest.mark.parametrize("trusted", [0, 1])
def test_forwarded_for_is_believed_only_from_trusted_proxies(
    demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc], trusted: int
) -> None:
    """Behind one trusted proxy, guesses from one forwarded client throttle that client only;
    with none trusted, a client cannot dodge the throttle by inventing X-Forwarded-For."""
    gw = start_gateway(
        KVMSUP_AUTH_FAIL_BURST=str(BURST),
        KVMSUP_AUTH_FAIL_PER_MINUTE="1",
        KVMSUP_TRUSTED_PROXIES=str(trusted),
    )
    wait_ready(gw)
    bad = {"Authorization": "Bearer not-a-token-at-all"}
    for n in range(BURST + 2):
        status, _, _ = get_from(gw, "127.0.0.1", "/vms", {**bad, "X-Forwarded-For": f"127.9.0.{n}"})
        assert status in (401, 429)
    good = {"Authorization": f"Bearer {gw.tokens.viewer}", "X-Forwarded-For": "127.8.0.1"}
    status, headers, _ = get_from(gw, "127.0.0.1", "/vms", good)
    if trusted:
        assert status == 200  # every guess came from another forwarded client
    else:
        assert status == 429 and "retry-after" in headers  # all of it was 127.0.0.1
