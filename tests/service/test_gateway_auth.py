"""Token parsing and lookup (SPEC §7): parsing, lookup, throttling and what reaches the logs
and the metrics, as pure logic (unit); the throttle against concurrent guesses on real threads
(service)."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.auth import Authenticator, Principal, TokenError, bearer, parse_tokens
from gateway.config import Settings
from gateway.errors import NotAuthenticated, Throttled
from gateway.throttle import FailureThrottle, client_key

pytestmark = pytest.mark.service


# -- trust boundary (issue: tokens of the wrong type, guessing, secrets in messages) ----------

SECRET = "aaaaaaaaaa"


def test_concurrent_guesses_get_no_more_tries_than_the_burst() -> None:
    import threading

    class SlowCheck(Authenticator):
        """A check that lets other threads run meanwhile (a loaded machine, a long list)."""

        def identify(self, secret: object) -> Principal | None:
            time.sleep(0.02)
            return super().identify(secret)

    auth = SlowCheck(parse_tokens(f"alice:viewer:{SECRET}"), FailureThrottle(3, 0.001))
    start = threading.Barrier(40)
    outcomes: list[str] = []

    def guess(i: int) -> None:
        start.wait()
        try:
            auth.authenticate(f"guess-{i}-{'y' * 30}", "10.0.0.9", "rest", now=0.0)
        except Throttled:
            outcomes.append("throttled")
        except NotAuthenticated:
            outcomes.append("checked")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("checked") == 3 and outcomes.count("throttled") == 37


# -- unit (no I/O): parsing, lookup, throttle ------------------------------------------------------


@pytest.mark.unit
def test_parse_tokens_and_identify() -> None:
    entries = parse_tokens("alice:viewer:aaaaaaaaaa, bob:operator:bbbbbbbbbb\n# comment\n")
    auth = Authenticator(entries)
    assert auth.identify("aaaaaaaaaa") == Principal("alice", "viewer")
    assert auth.identify("bbbbbbbbbb") == Principal("bob", "operator")
    assert auth.identify("nope") is None and auth.identify(None) is None
    assert Principal("bob", "operator").can("viewer")
    assert not Principal("alice", "viewer").can("operator")


@pytest.mark.unit
@pytest.mark.parametrize("text", ["alice:admin:aaaaaaaaaa", "alice:viewer", "a:viewer:short"])
def test_bad_token_lists_are_refused(text: str) -> None:
    with pytest.raises(TokenError):
        parse_tokens(text)


@pytest.mark.unit
def test_tokens_file_and_auth_none(tmp_path, caplog) -> None:
    f = tmp_path / "tokens"
    f.write_text("carol:operator:cccccccccc\n")
    auth = Authenticator.from_settings(Settings(api_tokens_file=f, gateway_id="gw"))
    assert auth.identify("cccccccccc") == Principal("carol", "operator")
    with caplog.at_level(logging.WARNING):
        open_auth = Authenticator.from_settings(Settings(auth="none", gateway_id="gw"))
    assert open_auth.open and open_auth.identify(None) is not None
    assert "KVMSUP_AUTH=none" in caplog.text


@pytest.mark.unit
def test_bearer_header() -> None:
    assert bearer({"Authorization": "Bearer abc"}) == "abc"
    assert bearer({"Authorization": "bearer  abc "}) == "abc"
    assert bearer({"Authorization": "Basic abc"}) is None
    assert bearer({}) is None


# -- trust boundary (issue: tokens of the wrong type, guessing, secrets in messages) ----------


@pytest.mark.unit
@pytest.mark.parametrize(
    "secret",
    [1, 1.5, True, [SECRET], {"token": SECRET}, b"aaaaaaaaaa", "\ud800", SECRET + "\udfff"],
)
def test_identify_refuses_anything_but_the_string_without_raising(secret: object) -> None:
    auth = Authenticator(parse_tokens(f"alice:viewer:{SECRET}"))
    assert auth.identify(secret) is None
    assert auth.identify("x" * 100_000) is None


@pytest.mark.unit
@pytest.mark.parametrize(
    "text",
    [
        "alice:s3cret-value-xyz:viewer",  # token and role swapped
        "s3cret-value-xyz:viewer:alice",  # name and token swapped (token too short, too)
        "s3cret-value-xyz:operator",
        "ok:viewer:bbbbbbbbbb, s3cret-value-xyz",
    ],
)
def test_token_list_errors_never_quote_a_field(text: str) -> None:
    with pytest.raises(TokenError) as err:
        parse_tokens(text)
    assert "s3cret" not in str(err.value) and "alice" not in str(err.value)
    assert "token entry" in str(err.value)


@pytest.mark.unit
def test_the_throttle_is_a_token_bucket_per_address() -> None:
    throttle = FailureThrottle(burst=3, per_minute=6)  # one token every 10 s
    assert [throttle.fail("a", 0.0) for _ in range(3)] == [0, 0, 10]
    assert throttle.retry_after("a", 0.0) == 10
    assert throttle.retry_after("a", 4.0) == 6
    assert throttle.retry_after("b", 4.0) == 0  # per address
    assert throttle.retry_after("a", 10.0) == 0  # one try back after 10 s ...
    assert throttle.fail("a", 10.0) == 10  # ... and blocked again at once if it fails
    assert throttle.retry_after("a", 1000.0) == 0


@pytest.mark.unit
def test_one_ipv6_network_is_one_client_of_the_throttle() -> None:
    """One subscriber holds a whole /64: a guesser rotating through it gets one bucket."""
    throttle = FailureThrottle(burst=3, per_minute=6)
    waits = [throttle.fail(f"2001:db8:1:2::{i:x}", 0.0) for i in range(1, 5)]
    assert waits == [0, 0, 10, 10]
    assert throttle.retry_after("2001:db8:1:2:ffff::1", 0.0) == 10  # same /64
    assert throttle.retry_after("2001:db8:1:3::1", 0.0) == 0  # the next /64
    assert throttle.retry_after("192.0.2.1", 0.0) == 0
    wide = FailureThrottle(burst=1, per_minute=6, v6_prefix=48)
    wide.fail("2001:db8:1:2::1", 0.0)
    assert wide.retry_after("2001:db8:1:ff::1", 0.0) == 10


@pytest.mark.unit
@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8::1", "2001:db8::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4 on a dual-stack socket
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
    ],
)
def test_client_key(address: str, key: str) -> None:
    assert client_key(address) == key


@pytest.mark.unit
def test_the_throttle_forgets_quiet_addresses_first() -> None:
    throttle = FailureThrottle(burst=2, per_minute=60, max_tracked=3)
    throttle.fail("old", 0.0)
    for i in range(10):
        throttle.fail(f"new-{i}", 100.0 + i)
    assert throttle.tracked() <= 3


@pytest.mark.unit
def test_authenticate_counts_throttles_and_never_logs_the_secret(caplog) -> None:
    auth = Authenticator(parse_tokens(f"alice:viewer:{SECRET}"), FailureThrottle(2, 1.0))
    with caplog.at_level(logging.DEBUG):
        assert auth.authenticate(SECRET, "10.0.0.1", "rest", now=0.0).name == "alice"
        for guess in ("guess-one-1", 42):
            with pytest.raises(NotAuthenticated):
                auth.authenticate(guess, "10.0.0.1", "socketio", now=1.0)
        with pytest.raises(Throttled) as throttled:
            auth.authenticate(SECRET, "10.0.0.1", "rest", now=2.0)
        for _ in range(5):
            with pytest.raises(NotAuthenticated):
                auth.authenticate(None, "10.0.0.2", "rest", now=2.0)
    assert 0 < throttled.value.extra["retry_after"] <= 60
    assert auth.failures() == {
        ("socketio", "unknown"): 1,
        ("socketio", "malformed"): 1,
        ("rest", "throttled"): 1,
        ("rest", "missing"): 5,
    }
    assert "failed authentication (unknown token) on socketio from 10.0.0.1" in caplog.text
    assert "10.0.0.1 is refused for" in caplog.text
    assert "10.0.0.2 is refused" not in caplog.text  # no token is not a guess
    assert SECRET not in caplog.text and "guess-one-1" not in caplog.text


@pytest.mark.unit
def test_auth_none_ignores_the_throttle() -> None:
    auth = Authenticator(None, FailureThrottle(1, 1.0))
    for _ in range(3):
        assert auth.authenticate(7, "10.0.0.1", "rest", now=0.0).name == "anonymous"


@pytest.mark.unit
def test_rest_refuses_query_tokens_and_answers_429_with_retry_after(make_app) -> None:
    app = make_app(started=False, auth_fail_burst=2, auth_fail_per_minute=1)
    client = app.test_client()
    assert client.get("/vms", headers={"Authorization": "Bearer viewer-secret"}).status_code == 200
    by_query = client.get("/vms?token=viewer-secret")
    assert by_query.status_code == 401 and "handshake only" in by_query.json["error"]["message"]
    for _ in range(2):
        assert client.get("/vms", headers={"Authorization": "Bearer nope-nope"}).status_code == 401
    throttled = client.get("/vms", headers={"Authorization": "Bearer viewer-secret"})
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert throttled.json["error"]["code"] == "too_many_requests"
    metrics = client.get(
        "/metrics",
        headers={"Authorization": "Bearer viewer-secret"},
        environ_base={"REMOTE_ADDR": "10.9.9.9"},  # another client
    )
    labels = {"gateway": "gw-unit", "transport": "rest", "reason": "unknown"}
    [failures] = [
        s.value
        for f in text_string_to_metric_families(metrics.text)
        for s in f.samples
        if s.name == "kvmsup_gateway_auth_failures_total" and s.labels == labels
    ]
    assert failures == 2


@pytest.mark.unit
@pytest.mark.parametrize(
    "auth", [{"token": 1}, {"token": ["viewer-secret"]}, {"token": "\ud800"}, "viewer-secret", [1]]
)
def test_socketio_connect_refuses_tokens_of_the_wrong_type(make_app, auth: object) -> None:
    app = make_app(started=False, auth_fail_burst=100)
    socketio = app.extensions["socketio"]
    assert not socketio.test_client(app, auth=auth).is_connected()
    assert socketio.test_client(app, auth={"token": "viewer-secret"}).is_connected()


@pytest.mark.unit
def test_socket_limit_is_a_memory_bound_the_worker_has_room_above() -> None:
    assert Settings(gateway_id="gw").socket_limit() == 10_000
    # KVMSUP_THREADS of an older configuration is still accepted, and no longer shrinks the cap.
    assert Settings(gateway_id="gw", threads=8).socket_limit() == 10_000
    assert Settings(gateway_id="gw", threads=8, max_sockets=100).socket_limit() == 100
    for cap in (1, 100, 10_000, 250_000):
        settings = Settings(gateway_id="gw", max_sockets=cap)
        # Every session's requests fit in gunicorn's connections, with room left for REST.
        assert settings.worker_connections() >= 2 * cap + 1000
    with pytest.raises(ValueError):
        Settings(gateway_id="gw", threads=2)  # still bounded as before


@pytest.mark.unit
def test_a_valid_token_gives_its_reserved_try_back() -> None:
    auth = Authenticator(parse_tokens(f"alice:viewer:{SECRET}"), FailureThrottle(2, 0.001))
    for _ in range(10):  # successes and missing tokens never use up the address's tries
        assert auth.authenticate(SECRET, "10.0.0.1", "rest", now=0.0).name == "alice"
        with pytest.raises(NotAuthenticated):
            auth.authenticate(None, "10.0.0.1", "rest", now=0.0)
    assert auth.throttle.tracked() == 0
    with pytest.raises(NotAuthenticated):
        auth.authenticate("guess-one-1", "10.0.0.1", "rest", now=0.0)
    assert auth.authenticate(SECRET, "10.0.0.1", "rest", now=0.0).name == "alice"


@pytest.mark.unit
def test_a_full_throttle_table_is_swept_once_per_quarter_of_it() -> None:
    throttle = FailureThrottle(burst=2, per_minute=0.001, max_tracked=100)
    for i in range(100):
        throttle.fail(f"guesser-{i}", 0.0)
    assert throttle.tracked() == 100
    throttle.fail("one-more", 0.0)  # a sweep: down to three quarters, the oldest go first
    assert throttle.tracked() == 76
    assert throttle.retry_after("guesser-99", 0.0) == 0 and throttle.fail("guesser-99", 0.0) > 0
    for i in range(24):  # room for these without another sweep
        throttle.fail(f"later-{i}", 0.0)
    assert throttle.tracked() == 100
