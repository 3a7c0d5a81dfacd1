"""API tokens and roles (SPEC §7): parsing, constant-time lookup, failure throttling and
counts. Pure: the web layer's role check (`gateway.web.roles`) and the Socket.IO connect
handler call it with what the request carried."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.config import Settings
from gateway.errors import NotAuthenticated, Throttled
from gateway.throttle import FailureThrottle

logger = logging.getLogger(__name__)

Role = Literal["viewer", "operator"]
ROLE_RANK: dict[str, int] = {"viewer": 1, "operator": 2}
# Why an authentication failed, as counted in /metrics; `throttled` was refused unchecked.
FAILURE_REASONS = ("missing", "malformed", "unknown", "throttled")
MAX_SECRET = 4096  # longer is not one of ours, and comparing it would only cost time


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
    """`name:role:token` entries separated by commas or newlines; `#` starts a comment line.

    Errors name an entry by its position, never by a field: with the fields in the wrong
    order the "name" or "role" may be the secret, and this message reaches the log."""
    entries: list[tuple[Principal, str]] = []
    position = 0
    for raw in text.replace("\n", ",").split(","):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        position += 1
        where = f"token entry {position}"
        parts = item.split(":", 2)
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise TokenError(f"{where}: entries must look like name:role:token")
        name, role, token = (p.strip() for p in parts)
        if role not in ROLE_RANK:
            raise TokenError(f"{where}: the role (second field) must be viewer or operator")
        if len(token) < 8:
            raise TokenError(f"{where}: the secret (third field) is shorter than 8 characters")
        entries.append((Principal(name, role), token))  # type: ignore[arg-type]
    return entries


def read_tokens(settings: Settings) -> list[tuple[Principal, str]]:
    """The entries of KVMSUP_API_TOKENS and KVMSUP_API_TOKENS_FILE; TokenError when malformed."""
    text = settings.api_tokens or ""
    if settings.api_tokens_file:
        text += "\n" + settings.api_tokens_file.read_text()
    return parse_tokens(text)


class Authenticator:
    """Maps a presented secret to a Principal; `None` when auth is off (KVMSUP_AUTH=none).

    `authenticate` is the door both REST and Socket.IO use: it throttles failures per client
    address, counts them by reason for /metrics, and logs them without the secret."""

    def __init__(
        self, entries: list[tuple[Principal, str]] | None, throttle: FailureThrottle | None = None
    ) -> None:
        self.entries = entries
        self.throttle = throttle or FailureThrottle(10, 6.0)
        self._failures: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        throttle = FailureThrottle(
            settings.auth_fail_burst, settings.auth_fail_per_minute, v6_prefix=settings.ipv6_prefix
        )
        if settings.auth == "none":
            logger.warning("KVMSUP_AUTH=none: the API is open to anyone who can reach it")
            return cls(None, throttle)
        entries = read_tokens(settings)
        if not entries:
            logger.warning("no API tokens configured: every request will be refused (401)")
        return cls(entries, throttle)

    @property
    def open(self) -> bool:
        return self.entries is None

    def identify(self, secret: object) -> Principal | None:
        """The principal of `secret`; `None` for anything else, of any type. Never raises."""
        if self.entries is None:
            return ANONYMOUS
        given = _encoded(secret)
        if given is None:
            return None
        found: Principal | None = None
        # Compare against every entry so timing tells nothing about which one matched.
        for principal, token in self.entries:
            if hmac.compare_digest(given, token.encode()):
                found = principal
        return found

    def authenticate(
        self, secret: object, address: str, transport: str, now: float | None = None
    ) -> Principal:
        """The caller's principal, or NotAuthenticated / Throttled."""
        if self.entries is None:
            return ANONYMOUS
        now = time.monotonic() if now is None else now
        # A token of the address's bucket is taken before the check and given back unless
        # the attempt fails: concurrent guesses cannot all pass on the same last token.
        wait = self.throttle.take(address, now)
        if wait:
            self._count(transport, "throttled")
            raise Throttled(
                f"too many failed authentications from this address; retry in {wait} s",
                retry_after=wait,
            )
        principal = self.identify(secret)
        if principal is not None:
            self.throttle.give_back(address, now)
            return principal
        if secret is None or secret == "":
            self.throttle.give_back(address, now)
            # Not a guess: a client that has not been given a token yet. Refused, counted,
            # but neither throttled nor logged above debug (a probe would flood the log).
            self._count(transport, "missing")
            logger.debug("no token on %s from %s", transport, address)
            raise NotAuthenticated("a valid API token is required")
        reason = "unknown" if _encoded(secret) is not None else "malformed"
        self._count(transport, reason)
        blocked = self.throttle.blocked_for(address, now)
        # The secret itself is never logged, nor anything derived from it.
        logger.warning("failed authentication (%s token) on %s from %s", reason, transport, address)
        if blocked:
            logger.warning(
                "%s is refused for %d s after repeated failed authentications", address, blocked
            )
        raise NotAuthenticated("a valid API token is required")

    def _count(self, transport: str, reason: str) -> None:
        with self._lock:
            self._failures[(transport, reason)] += 1

    def failures(self) -> dict[tuple[str, str], int]:
        """Failed authentications since start, by (transport, reason)."""
        with self._lock:
            return dict(self._failures)


def _encoded(secret: object) -> bytes | None:
    """The secret as bytes, or None when it cannot be one of ours: not a string, empty, too
    long, or not encodable (a lone surrogate arrives fine through JSON)."""
    if not isinstance(secret, str) or not secret or len(secret) > MAX_SECRET:
        return None
    try:
        return secret.encode()
    except UnicodeEncodeError:
        return None


MALFORMED = object()  # stands for a credential that is not even shaped like a token


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an `Authorization: Bearer …` header, if that is what `headers` carry."""
    return bearer_token(headers.get("Authorization", ""))


def bearer_token(value: str) -> str | None:
    """The token of an Authorization header's value, when its scheme is Bearer."""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
