"""The REST role check: the decorator that lets a view run only for a token of its role."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import g, request

from gateway.auth import MALFORMED, Authenticator, Role, bearer_token
from gateway.current import client_address, service
from gateway.errors import NotAuthenticated, NotPermitted

P = ParamSpec("P")
R = TypeVar("R")


def require(role: Role) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """REST decorator: 401 without a valid token, 403 when the token's role is too low, 429
    while the client address is throttled. Tokens come only from the Authorization header: a
    `?token=` in a URL ends up in proxy logs and browser history."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            auth: Authenticator = service().auth
            header = request.headers.get("Authorization")
            secret: object = bearer_token(header or "")
            if secret is None and header:
                secret = MALFORMED  # an Authorization header, but not a bearer token
            try:
                principal = auth.authenticate(secret, client_address(), "rest")
            except NotAuthenticated:
                message = "a valid API token is required (Authorization: Bearer …)"
                if "token" in request.args:
                    message += "; ?token= is accepted on the Socket.IO handshake only"
                raise NotAuthenticated(message) from None
            if not principal.can(role):
                raise NotPermitted(f"this action needs the {role} role")
            g.principal = principal
            return view(*args, **kwargs)

        wrapper.required_role = role  # type: ignore[attr-defined]  # read by gateway.web.openapi
        return wrapper

    return decorate
