"""Token parsing and lookup (SPEC §7)."""

from __future__ import annotations

import logging

import pytest

from gateway.auth import Authenticator, Principal, TokenError, bearer, parse_tokens
from gateway.config import Settings

pytestmark = pytest.mark.unit


def test_parse_tokens_and_identify() -> None:
    entries = parse_tokens("alice:viewer:aaaaaaaaaa, bob:operator:bbbbbbbbbb\n# comment\n")
    auth = Authenticator(entries)
    assert auth.identify("aaaaaaaaaa") == Principal("alice", "viewer")
    assert auth.identify("bbbbbbbbbb") == Principal("bob", "operator")
    assert auth.identify("nope") is None and auth.identify(None) is None
    assert Principal("bob", "operator").can("viewer")
    assert not Principal("alice", "viewer").can("operator")


@pytest.mark.parametrize("text", ["alice:admin:aaaaaaaaaa", "alice:viewer", "a:viewer:short"])
def test_bad_token_lists_are_refused(text: str) -> None:
    with pytest.raises(TokenError):
        parse_tokens(text)


def test_tokens_file_and_auth_none(tmp_path, caplog) -> None:
    f = tmp_path / "tokens"
    f.write_text("carol:operator:cccccccccc\n")
    auth = Authenticator.from_settings(Settings(api_tokens_file=f, gateway_id="gw"))
    assert auth.identify("cccccccccc") == Principal("carol", "operator")
    with caplog.at_level(logging.WARNING):
        open_auth = Authenticator.from_settings(Settings(auth="none", gateway_id="gw"))
    assert open_auth.open and open_auth.identify(None) is not None
    assert "KVMSUP_AUTH=none" in caplog.text


def test_bearer_header() -> None:
    assert bearer({"Authorization": "Bearer abc"}) == "abc"
    assert bearer({"Authorization": "bearer  abc "}) == "abc"
    assert bearer({"Authorization": "Basic abc"}) is None
    assert bearer({}) is None
