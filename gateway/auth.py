"""API tokens and roles (SPEC §7): parsing, constant-time lookup, the REST role check."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Literal, ParamSpec, TypeVar

from flask import current_app, g, request
from werkzeug.datastructures import Headers

from gateway.config import Settings
from gateway.errors import Forbidden, Unauthorized

logger = logging.getLogger(__name__)

Role = Literal["viewer", "operator"]
ROLE_RANK: dict[str, int] = {"viewer": 1, "operator": 2}

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name (the `by` of its commands) and its role."""

    name: str
    role: Role

    def can(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


ANONYMOUS = Principal("anonymous", "operator")


class TokenError(ValueError):
    """A malformed token list; the gateway refuses to start with it."""


def parse_tokens(text: str) -> list[tuple[Principal, str]]:
    """`name:role:token` entries separated by commas or newlines; `#` starts a comment line."""
    entries: list[tuple[Principal, str]] = []
    for raw in text.replace("\n", ",").split(","):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        parts = item.split(":", 2)
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise TokenError("token entries must look like name:role:token")
        name, role, token = (p.strip() for p in parts)
        if role not in ROLE_RANK:
            raise TokenError(f"token {name!r}: role must be viewer or operator, not {role!r}")
        if len(token) < 8:
            raise TokenError(f"token {name!r}: the secret is shorter than 8 characters")
        entries.append((Principal(name, role), token))  # type: ignore[arg-type]
    return entries


class Authenticator:
    """Maps a presented secret to a Principal; `None` when auth is off (KVMSUP_AUTH=none)."""

    def __init__(self, entries: list[tuple[Principal, str]] | None) -> None:
        self.entries = entries

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        if settings.auth == "none":
            logger.warning("KVMSUP_AUTH=none: the API is open to anyone who can reach it")
            return cls(None)
        text = settings.api_tokens or ""
        if settings.api_tokens_file:
            text += "\n" + settings.api_tokens_file.read_text()
        entries = parse_tokens(text)
        if not entries:
            logger.warning("no API tokens configured: every request will be refused (401)")
        return cls(entries)

    @property
    def open(self) -> bool:
        return self.entries is None

    def identify(self, secret: str | None) -> Principal | None:
        if self.entries is None:
            return ANONYMOUS
        if not secret:
            return None
        found: Principal | None = None
        given = secret.encode()
        # Compare against every entry so timing tells nothing about which one matched.
        for principal, token in self.entries:
            if hmac.compare_digest(given, token.encode()):
                found = principal
        return found


def bearer(headers: Mapping[str, str] | Headers) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require(role: Role) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """REST decorator: 401 without a valid token, 403 when the token's role is too low."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            auth: Authenticator = current_app.extensions["kvmsup"].auth
            secret = bearer(request.headers) or request.args.get("token")
            principal = auth.identify(secret)
            if principal is None:
                raise Unauthorized("a valid API token is required (Authorization: Bearer …)")
            if not principal.can(role):
                raise Forbidden(f"this action needs the {role} role")
            g.principal = principal
            return view(*args, **kwargs)

        wrapper.required_role = role  # type: ignore[attr-defined]  # read by gateway.openapi
        return wrapper

    return decorate
