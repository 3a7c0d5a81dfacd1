"""What crosses the HTTP boundary besides the routes' own checks: strict JSON out; in, JSON
bodies only, state changes only from allowed origins, and only allowed `Host` names.

Why each rule: a browser lets any web page send a "simple" cross-site POST (a text/plain or
form body, no preflight) to the gateway with the visitor's network position, so with
`KVMSUP_AUTH=none` a page the operator visits could stop a VM. Refusing bodies that are not
`application/json` forces a preflight that the CORS settings then refuse, and refusing a
foreign `Origin` covers what a browser sends without one. A DNS-rebinding page reaches the
gateway under the attacker's host name: the `Host` allow-list refuses it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from gateway.current import service_of
from gateway.errors import InvalidInput, NotPermitted
from gateway.web.http_errors import drain

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Host names a DNS-rebinding page cannot take: it needs a name of its own to point here.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, refusing `NaN`/`Infinity` (a 500, logged) rather than writing JSON that
    no client parses. The ingest's bounds keep them out; this is the last line."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs["allow_nan"] = False
        return super().dumps(obj, **kwargs)


def host_name(host_header: str) -> str:
    """`Host` without its port, lowercased; an IPv6 literal without its brackets."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(name: str, allowed: frozenset[str], open_mode: bool) -> bool:
    """An address or a loopback name always (a rebinding page cannot send one: its requests
    carry its own name); other names as listed (`*`: any), or, with no list, any name when
    tokens guard the API and none when it runs open (`KVMSUP_AUTH=none`)."""
    if is_ip_literal(name) or name in LOOPBACK_NAMES:
        return True
    if allowed:
        return "*" in allowed or name in allowed
    return not open_mode


def origin_allowed(origin: str, host_header: str, allowed: frozenset[str]) -> bool:
    """Same origin (the `Origin`'s host and port are the request's `Host`, whatever the
    scheme a TLS proxy ended), or one of the exact CORS origins."""
    if origin in allowed:
        return True
    _, sep, rest = origin.partition("://")
    return bool(sep) and rest.lower() == host_header.strip().lower()


def _has_body(limit: int | None) -> bool:
    """Whether the request carries a body; one over the size limit is a 413 first."""
    if request.content_length:
        if limit is not None and request.content_length > limit:
            raise RequestEntityTooLarge()
        return True
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        # Werkzeug cuts a chunked body at the limit without a word: reaching it is too large.
        data = request.get_data(cache=True)
        if limit is not None and len(data) >= limit:
            raise RequestEntityTooLarge()
        return bool(data)
    return False


def init_app(app: Flask) -> None:
    app.json = StrictJSONProvider(app)
    settings = service_of(app).settings
    hosts = frozenset(settings.allowed_hosts_list())
    origins = frozenset(settings.cors_list())
    open_mode = settings.auth == "none"

    @app.before_request
    def _boundary() -> None:
        name = host_name(request.host)
        if not host_allowed(name, hosts, open_mode):
            drain(request.environ)
            raise InvalidInput(
                f"host {name!r} is not allowed: list it in KVMSUP_ALLOWED_HOSTS",
                code="host_not_allowed",
            )
        origin = request.headers.get("Origin")
        if (
            request.method in STATE_CHANGING
            and origin is not None
            and not origin_allowed(origin, request.host, origins)
        ):
            drain(request.environ)
            raise NotPermitted(
                f"requests from origin {origin[:200]!r} may not change anything: list it in "
                "KVMSUP_CORS_ORIGINS",
                code="origin_not_allowed",
            )
        if (
            _has_body(app.config.get("MAX_CONTENT_LENGTH"))
            and request.mimetype != "application/json"
        ):
            drain(request.environ)
            raise UnsupportedMediaType(
                f"a body must be JSON with Content-Type: application/json, not "
                f"{request.mimetype or 'none'!r}"
            )
