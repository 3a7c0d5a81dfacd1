"""Socket.IO attacks performed with raw engine.io frames against the gateway process: tokens of
the wrong type, sessions that never authenticate, malformed packets (SPEC §5, §7)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
import socketio
import websocket

from tests.service.conftest import DemoStack, wait_ready
from tests.support.broker import Broker
from tests.support.gateway import GatewayProc, wait_until
from tests.support.procs import Service
from tests.support.rawsio import RawSio, Refused, connect_error

pytestmark = pytest.mark.service

AUTH_TIMEOUT = 3.0
# Long enough for the server to close and, for a client that ignores the close, shut TCP down.
CLOSED_WITHIN = AUTH_TIMEOUT + 10


# The module's tests share one stack: they attack the gateway's Socket.IO layer, and change no
# VM for good (db-01 is suspended and resumed). The failure throttle has its own tests; here it
# would get in the way of the many tries.
SHARED_GATEWAY_ENV = {
    "KVMSUP_SIO_AUTH_TIMEOUT": str(AUTH_TIMEOUT),
    "KVMSUP_AUTH_FAIL_BURST": "1000",
}


@pytest.fixture
def gw(shared_stack: DemoStack) -> GatewayProc:
    return shared_stack.gateway


@pytest.fixture
def broker(shared_stack: DemoStack) -> Broker:
    """A gateway of a test's own (`small`) joins the shared broker and agents."""
    return shared_stack.broker


@pytest.fixture
def demo_agents(shared_stack: DemoStack) -> dict[str, Service]:
    return shared_stack.agents


def toggle_db01(gw: GatewayProc) -> None:
    """A VM state change every connected client is pushed (`vm_state`)."""
    assert gw.post("/vm/db-01/suspend").status_code == 200
    assert gw.post("/vm/db-01/resume").status_code == 200


def test_tokens_of_the_wrong_type_are_refused_and_the_transport_closed(gw: GatewayProc) -> None:
    watcher = gw.sio()  # a legitimate client, to know when the pushes have gone out
    attempts: list[Any] = [
        {"token": 1},
        {"token": [gw.tokens.viewer]},
        {"token": {"token": gw.tokens.viewer}},
        {"token": "\ud800"},
        {"token": gw.tokens.viewer + "\ud800"},
        {"token": "x" * 100_000},
        {"token": ""},
        {"token": None},
        {"token": True},
        {"token": "not-a-real-token-123"},
        {},
        None,
        [gw.tokens.viewer],
        gw.tokens.viewer,  # auth must be {"token": …}, not the bare string
        5,
    ]
    sessions = []
    try:
        for auth in attempts:
            raw = RawSio(gw.port)
            answer = raw.connect(auth)
            err = connect_error(answer)
            assert err["message"].startswith("unauthorized"), (auth, err)
            assert err["data"] == {"code": "unauthorized", "status": 401}, (auth, err)
            sessions.append(raw)
        toggle_db01(gw)
        watcher.wait_for("vm_state", lambda d: d["name"] == "db-01" and d["state"] == "running")
        for auth, raw in zip(attempts, sessions, strict=True):
            assert raw.wait_closed(CLOSED_WITHIN), f"transport left open after refusing {auth!r}"
            assert not raw.events("vm_state"), auth
            assert not [f for f in raw.received if f.startswith("40")], auth  # no CONNECT
    finally:
        watcher.close()
        for raw in sessions:
            raw.close()
    out = gw.service.output()
    assert "internal error" not in out and "handler error" not in out
    for secret in (gw.tokens.viewer, "not-a-real-token-123"):
        assert secret not in out


def test_query_token_on_the_handshake_still_works(gw: GatewayProc) -> None:
    raw = RawSio(gw.port, query=f"&token={gw.tokens.viewer}")
    try:
        assert raw.connect(None).startswith("40{")
        raw.send('420["request_vms_list"]')
        ack = raw.next(lambda f: f.startswith("430"))
        assert ack is not None and json.loads(ack[3:])[0]["count"] == 7
    finally:
        raw.close()


def test_a_session_that_never_authenticates_gets_nothing_and_is_closed(gw: GatewayProc) -> None:
    watcher = gw.sio()
    silent = RawSio(gw.port)  # engine.io open, then never a Socket.IO CONNECT
    try:
        toggle_db01(gw)
        watcher.wait_for("vm_state", lambda d: d["name"] == "db-01" and d["state"] == "running")
        assert silent.wait_closed(CLOSED_WITHIN)
        assert not [f for f in silent.received if f.startswith("4")], silent.received
    finally:
        watcher.close()
        silent.close()


def test_an_authenticated_raw_session_outlives_the_deadline(gw: GatewayProc) -> None:
    # The watcher's full handshake first: the raw session must authenticate right after it
    # opens, or a slow handshake beside it would let its deadline pass before it asks.
    watcher = gw.sio()
    raw = RawSio(gw.port)
    try:
        assert raw.connect({"token": gw.tokens.viewer}).startswith("40{")
        assert not raw.wait_closed(AUTH_TIMEOUT + 2)
        toggle_db01(gw)
        watcher.wait_for("vm_state", lambda d: d["name"] == "db-01" and d["state"] == "running")
        assert raw.next(lambda f: f.startswith('42["vm_state"'), timeout=10) is not None
    finally:
        raw.close()
        watcher.close()


# Every event with payloads of every wrong type. Each call must be answered (ack and `error`
# event) with a 4xx, and nothing may run.
WRONG: list[Any] = [
    1,
    [1, 2],
    "web-01",
    {"name": {"nested": {"deeper": [1]}}},
    "x" * 200_000,
    "\ud800",
    {"name": 5},
    {"name": "web-01", "host": []},
    {"host": []},
    {"name": "\ud800"},
    {"name": "x" * 200_000},
    {"name": ["web-01"]},
    {"name": True},
]
PAYLOAD_EVENTS = ["request_metrics", "vm_action"]  # these need an object with a name
OPTIONAL_EVENTS = ["request_all_metrics", "request_vms_list"]  # these take nothing
FILTER_EVENTS = ["subscribe_metrics", "unsubscribe_metrics"]  # an optional {name, host}


def expected_error(event: str, payload: Any) -> bool:
    if event in PAYLOAD_EVENTS:
        return True
    if event in OPTIONAL_EVENTS:
        return not isinstance(payload, dict)
    if not isinstance(payload, dict):
        return True
    name, host = payload.get("name"), payload.get("host")
    return (
        not (name is None or isinstance(name, str))
        or host not in (None, "")
        or (isinstance(name, str) and (len(name) > 1024 or name == "\ud800"))
    )


def test_every_event_with_wrong_payloads_is_answered_with_an_error(gw: GatewayProc) -> None:
    start = len(gw.service.output())  # the shared gateway's log: only this test's part
    sio = gw.sio("operator")
    try:
        for event in PAYLOAD_EVENTS + OPTIONAL_EVENTS + FILTER_EVENTS:
            for payload in WRONG:
                sio.events.clear()
                ack = sio.call(event, payload, timeout=15)
                assert isinstance(ack, dict), (event, payload, ack)
                if expected_error(event, payload):
                    assert "error" in ack, (event, str(payload)[:80], ack)
                    assert ack["status"] in (400, 404), (event, str(payload)[:80], ack)
                    assert len(json.dumps(ack)) < 4000, "an error must not echo a huge input"
                    assert sio.wait_for("error", lambda e, ev=event: e["event"] == ev)
                else:
                    assert "error" not in ack, (event, str(payload)[:80], ack)
        for bad in (
            {"name": "web-01", "action": 5},
            {"name": "web-01", "action": "stop", "force": "yes"},
            {"name": "web-01", "action": "stop", "wait": "5"},
            {"name": "web-01", "action": "stop", "wait": True},
            {"name": "web-01", "action": "stop", "timeout_s": "soon"},
            {"name": "web-01", "action": "stop", "host": {"demo-a": 1}},
            {"name": "web-01", "action": "\ud800"},
            {"name": "web-01"},
        ):
            ack = sio.call("vm_action", bad, timeout=15)
            assert ack["status"] == 400, (bad, ack)
        unknown = sio.call("no_such_event", {"name": "web-01"})
        assert (unknown["status"], unknown["error"]["code"]) == (400, "bad_request")
        sio.client.emit("no_such_event_either")
        sio.wait_for("error", lambda e: e["event"] == "no_such_event_either")
        # Still a working session, and nothing was stopped.
        assert sio.call("request_vms_list")["count"] == 7
    finally:
        sio.close()
    assert gw.get("/vm/web-01").json()["state"] == "running"
    out = gw.service.output()[start:]
    assert "internal error" not in out and "failed" not in out, out[-3000:]


@pytest.mark.parametrize(
    "frame",
    [
        "42[5]",
        '42[{"a":1}]',
        "42[null]",
        "42[]",
        "42{}",
        '42"request_vms_list"',
        "42",
        '42["connect",{"token":"x"}]',
        '42["disconnect"]',
        '42["connect_error"]',
    ],
)
def test_event_packets_of_the_wrong_shape_get_an_error(gw: GatewayProc, frame: str) -> None:
    raw = RawSio(gw.port)
    try:
        assert raw.connect({"token": gw.tokens.viewer}).startswith("40{")
        raw.send(frame)
        err = raw.next(lambda f: f.startswith('42["error"'))
        assert err is not None, raw.received
        assert json.loads(err[2:])[1]["status"] == 400
        # with an ack id, the same answer comes back as the ack
        raw.send("427" + frame[2:])
        ack = raw.next(lambda f: f.startswith("437"))
        assert ack is not None and json.loads(ack[3:])[0]["status"] == 400
        # the session still works and is still authenticated
        raw.send('428["request_vms_list"]')
        ack = raw.next(lambda f: f.startswith("438"))
        assert ack is not None and json.loads(ack[3:])[0]["count"] == 7
    finally:
        raw.close()
    assert "Traceback" not in gw.service.output()


@pytest.mark.parametrize(
    "frame",
    [
        "42[",  # not JSON
        "4x",
        "49",  # no such packet type
        '44{"message":"x"}',  # CONNECT_ERROR is the server's
        '451-["request_vms_list",{"_placeholder":true,"num":0}]',  # binary event
        b"\x00\x01binary",
        "",  # engine.io frames python-engineio itself cannot decode
        "x",
    ],
)
def test_malformed_packets_close_the_session(gw: GatewayProc, frame: str | bytes) -> None:
    start = len(gw.service.output())  # the shared gateway's log: only this test's part
    raw = RawSio(gw.port)
    try:
        assert raw.connect({"token": gw.tokens.viewer}).startswith("40{")
        raw.send(frame)
        assert raw.wait_closed(10), raw.received
    finally:
        raw.close()
    # The gateway is fine and logged one line, no traceback.
    assert gw.get("/vms").status_code == 200
    assert "malformed" in gw.service.output()[start:]


def test_a_frame_over_the_size_limit_closes_the_session(gw: GatewayProc) -> None:
    raw = RawSio(gw.port)
    try:
        assert raw.open["maxPayload"] == 1_000_000
        assert raw.connect({"token": gw.tokens.viewer}).startswith("40{")
        try:
            raw.send('42["request_metrics",{"name":"' + "x" * 5_000_000 + '"}]')
        except OSError:
            pass  # the server hung up before the whole frame was sent: what we want
        else:
            assert raw.wait_closed(15)
    finally:
        raw.close()
    assert gw.get("/vms").status_code == 200


def test_leaving_the_namespace_ends_the_transport(gw: GatewayProc) -> None:
    raw = RawSio(gw.port)
    try:
        assert raw.connect({"token": gw.tokens.viewer}).startswith("40{")
        raw.send("41")
        assert raw.wait_closed(10)
    finally:
        raw.close()


def test_reconnecting_an_authenticated_session_with_a_bad_token_changes_nothing(
    gw: GatewayProc,
) -> None:
    raw = RawSio(gw.port)
    try:
        assert raw.connect({"token": gw.tokens.viewer}).startswith("40{")
        assert raw.connect({"token": 1}).startswith("44")
        raw.send('421["request_vms_list"]')
        ack = raw.next(lambda f: f.startswith("431"))
        assert ack is not None and json.loads(ack[3:])[0]["count"] == 7
    finally:
        raw.close()


def test_tokens_never_reach_the_log(gw: GatewayProc) -> None:
    start = len(gw.service.output())  # the shared gateway's log: only this test's part
    guesses = [f"guess-{i}-secret-value" for i in range(5)]
    for guess in guesses:
        raw = RawSio(gw.port)
        try:
            raw.connect({"token": guess})
        finally:
            raw.close()
        assert gw.get("/vms", token=guess).status_code in (401, 429)
    good = gw.sio("viewer", query_token=True)
    good.close()
    assert gw.get("/vms", params={"token": gw.tokens.operator}, token=None).status_code == 401
    wait_until(lambda: "failed authentication" in gw.service.output()[start:])
    out = gw.service.output()
    for secret in [*guesses, gw.tokens.viewer, gw.tokens.operator]:
        assert secret not in out


# -- socket exhaustion: the caps on open sessions, per address and in all ---------------------

TOTAL = 6  # KVMSUP_MAX_SOCKETS, small enough to reach here
PER_CLIENT = 4


# For the test that fills every slot with sockets that never authenticate: all of them must
# still be open when the last is refused, however long opening them takes on a busy machine.
FILL_AUTH_TIMEOUT = 10.0


def start_small(
    start_gateway: Callable[..., GatewayProc], auth_timeout: float = AUTH_TIMEOUT
) -> GatewayProc:
    g = start_gateway(
        KVMSUP_MAX_SOCKETS=str(TOTAL),
        KVMSUP_MAX_SOCKETS_PER_CLIENT=str(PER_CLIENT),
        KVMSUP_SIO_AUTH_TIMEOUT=str(auth_timeout),
    )
    wait_ready(g)
    return g


@pytest.fixture
def small(
    demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc]
) -> GatewayProc:
    return start_small(start_gateway)


def open_until_refused(port: int, source: str, tries: int) -> tuple[list[RawSio], Refused | None]:
    opened: list[RawSio] = []
    for _ in range(tries):
        try:
            opened.append(RawSio(port, source=source))
        except Refused as refused:
            return opened, refused
    return opened, None


def health_answers(gw: GatewayProc) -> bool:
    return gw.get("/health", token=None).status_code == 200  # 15 s client timeout


def test_sockets_that_never_authenticate_cannot_starve_rest(
    demo_agents: dict[str, Service], start_gateway: Callable[..., GatewayProc]
) -> None:
    small = start_small(start_gateway, FILL_AUTH_TIMEOUT)
    held: list[RawSio] = []
    try:
        mine, refused = open_until_refused(small.port, "127.0.0.1", PER_CLIENT + 5)
        held += mine
        assert len(mine) == PER_CLIENT
        assert refused is not None and refused.status == 429
        assert int(refused.headers.get("retry-after", "0")) > 0
        other, refused = open_until_refused(small.port, "127.0.0.2", PER_CLIENT + 5)
        held += other
        assert len(other) == TOTAL - PER_CLIENT  # the total cap, not the per-client one
        assert refused is not None and refused.status == 503
        # Every socket allowed is open: REST still answers.
        assert health_answers(small)
        assert small.get("/vms").json()["count"] == 7
        # None of them authenticates, and none reads what the server sends: each is closed
        # and its slot given back, so as many real clients fit in afterwards.
        fresh: list[RawSio] = wait_until(
            lambda: open_until_refused(small.port, "127.0.0.3", PER_CLIENT)[0] or None,
            timeout=FILL_AUTH_TIMEOUT + 30,
        )
        held += fresh
        for raw in fresh:  # at once: these have their own deadline running
            assert raw.connect({"token": small.tokens.viewer}).startswith("40{")
        for raw in mine + other:
            assert raw.wait_closed(10)
        assert health_answers(small)
    finally:
        for raw in held:
            raw.close()


def test_many_dashboards_leave_room_for_rest(small: GatewayProc) -> None:
    dashboards: list[RawSio] = []
    try:
        for source in ("127.0.0.2", "127.0.0.3"):
            for _ in range(TOTAL // 2):
                raw = RawSio(small.port, source=source)
                dashboards.append(raw)
                assert raw.connect({"token": small.tokens.viewer}).startswith("40{")
        with pytest.raises(Refused) as more:
            RawSio(small.port, source="127.0.0.4")
        assert more.value.status == 503
        # The authenticated ones stay past the deadline and get their pushes; REST answers.
        time.sleep(AUTH_TIMEOUT + 1)
        assert health_answers(small)
        toggle_db01(small)
        for raw in dashboards:
            assert raw.next(lambda f: f.startswith('42["vm_state"'), timeout=10), raw.received
            assert not raw.closed
    finally:
        for raw in dashboards:
            raw.close()
    # Closed sockets give their slots back.
    wait_until(lambda: RawSio(small.port, source="127.0.0.4").close() is None, timeout=10)


# -- the long-polling transport (browsers start with it, then upgrade) ------------------------


def test_polling_and_upgrading_clients_follow_the_same_rules(gw: GatewayProc) -> None:
    for transports in (["polling"], ["polling", "websocket"]):
        client = socketio.Client(reconnection=False)
        pushed: list[Any] = []
        client.on("vm_state", pushed.append)
        client.connect(gw.url, transports=transports, auth={"token": gw.tokens.viewer})
        try:
            assert client.call("request_vms_list", timeout=10)["count"] == 7
            bad = client.call("request_metrics", {"name": 5}, timeout=10)
            assert bad["status"] == 400
            time.sleep(AUTH_TIMEOUT + 1)  # past the deadline: authenticated, so still here
            toggle_db01(gw)
            wait_until(lambda seen=pushed: any(d["name"] == "db-01" for d in seen))
            assert client.connected
        finally:
            client.disconnect()
        refused = socketio.Client(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            refused.connect(gw.url, transports=transports, auth={"token": [1]}, wait_timeout=10)


def test_a_polling_session_that_never_authenticates_is_closed(gw: GatewayProc) -> None:
    http = requests.Session()
    base = f"{gw.url}/socket.io/?EIO=4&transport=polling"
    opened = http.get(base, timeout=10)
    assert opened.status_code == 200 and opened.text.startswith("0")
    sid = json.loads(opened.text[1:])["sid"]

    def gone() -> bool:
        # A long poll returns the server's CLOSE ("1"), or 400 once the session is gone.
        resp = http.get(f"{base}&sid={sid}", timeout=60)
        return resp.status_code == 400 or "1" in resp.text.split("\x1e")

    wait_until(gone, timeout=CLOSED_WITHIN + 30, every=0.2)


# -- many requests on one session: only the handshake takes a slot ----------------------------


def polling_handshake(port: int) -> str:
    opened = requests.get(f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling", timeout=10)
    assert opened.status_code == 200 and opened.text.startswith("0"), opened.text
    sid: str = json.loads(opened.text[1:])["sid"]
    return sid


def flood(count: int, attempt: Callable[[], Any]) -> tuple[list[Any], list[threading.Thread]]:
    """`count` concurrent attempts, each on its own connection; their results as they end."""
    results: list[Any] = []

    def one() -> None:
        try:
            results.append(attempt())
        except Exception as exc:  # a timeout or a reset: still an answer for the test
            results.append(exc)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return results, threads


def health_within(gw: GatewayProc, seconds: float) -> bool:
    try:
        return requests.get(f"{gw.url}/health", timeout=seconds).status_code == 200
    except requests.RequestException:
        return False


def test_many_long_polls_on_one_session_cannot_starve_rest(small: GatewayProc) -> None:
    sid = polling_handshake(small.port)
    poll = f"{small.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    results, threads = flood(64, lambda: requests.get(poll, timeout=60).status_code)
    # Without a limit each GET would wait out the ping interval holding one of the worker's
    # connections.
    assert wait_until(lambda: results.count(400) >= 63, timeout=30, every=0.1)
    assert health_within(small, 5)
    assert small.get("/vms").json()["count"] == 7
    for thread in threads:
        thread.join(60)
    # The one long poll allowed ends with the session (never authenticated).
    assert results.count(200) == 1, results
    # A released (or made-up) session is refused before engine.io sees it.
    assert requests.get(poll, timeout=10).status_code == 400
    made_up = poll.replace(sid, "nosuchsession")
    assert requests.get(made_up, timeout=10).status_code == 400


def test_many_websocket_upgrades_on_one_session_cannot_starve_rest(small: GatewayProc) -> None:
    sid = polling_handshake(small.port)
    url = f"ws://127.0.0.1:{small.port}/socket.io/?EIO=4&transport=websocket&sid={sid}"
    opened: list[websocket.WebSocket] = []

    def upgrade() -> int:
        try:
            ws = websocket.create_connection(url, timeout=60)
        except websocket.WebSocketBadStatusException as exc:
            return int(exc.status_code)
        opened.append(ws)  # never sends the probe: it would hold its connection
        return 101

    results, threads = flood(32, upgrade)
    try:
        assert wait_until(lambda: results.count(400) >= 31, timeout=30, every=0.1), results
        assert health_within(small, 5)
        assert small.get("/vms").json()["count"] == 7
    finally:
        for thread in threads:
            thread.join(60)
        for ws in opened:
            ws.close()
    assert results.count(101) <= 1, results
