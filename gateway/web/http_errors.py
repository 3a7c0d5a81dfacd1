"""How errors leave over HTTP: each domain error's status code, and the one place every error,
the gateway's or Flask's, becomes SPEC §4's JSON body `{"error": {"code", "message"}}`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from gateway.errors import (
    AgentTimeout,
    BusError,
    Conflict,
    GatewayError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    NotPermitted,
    Throttled,
    Unavailable,
)

if TYPE_CHECKING:
    from gateway.service import Outcome

# Most specific first: the first class an error is an instance of gives its status.
STATUS: tuple[tuple[type[GatewayError], int], ...] = (
    (InvalidInput, 400),
    (NotAuthenticated, 401),
    (NotPermitted, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Throttled, 429),
    (BusError, 503),
    (Unavailable, 503),
    (AgentTimeout, 504),
)


def outcome_status(outcome: Outcome) -> int:
    """A command's status: 200 when its job finished within the wait, 202 while it runs."""
    return 200 if outcome.finished else 202


def status_of(exc: GatewayError) -> int:
    """The HTTP status of a domain error (also sent in Socket.IO error acks); 500 otherwise."""
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


# Read (and discard) at most this much of a refused body before answering.
DRAIN_MAX = 1024 * 1024


def drain(environ: dict[str, Any]) -> None:
    """Read what is left of a refused body, up to DRAIN_MAX. gunicorn drains only a little of
    an unread body itself and then closes the connection, after its answer said keep-alive:
    the client's next request on that connection would fail with no answer at all. Past
    DRAIN_MAX the connection is closed all the same, the cost of a bigger body stays bounded."""
    stream = environ.get("wsgi.input")
    length = environ.get("CONTENT_LENGTH")
    if stream is None:
        return
    if length:
        try:
            left = min(int(length), DRAIN_MAX)
        except ValueError:
            return
    elif environ.get("wsgi.input_terminated"):
        left = DRAIN_MAX  # the server ends a chunked stream itself
    else:
        return  # a stream that never ends: reading it would block
    try:
        while left > 0:
            chunk = stream.read(min(64 * 1024, left))
            if not chunk:
                return
            left -= len(chunk)
    except (OSError, ValueError):
        return


def init_app(app: Flask) -> None:
    """Every error, ours or Flask's, leaves as `{"error": {"code", "message"}}`."""

    @app.errorhandler(GatewayError)
    def _ours(exc: GatewayError) -> ResponseReturnValue:
        resp = jsonify(exc.to_dict())
        if isinstance(exc, NotAuthenticated):
            resp.headers["WWW-Authenticate"] = "Bearer"
        retry = exc.extra.get("retry_after")
        if isinstance(retry, int):
            resp.headers["Retry-After"] = str(retry)
        return resp, status_of(exc)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_exc: RequestEntityTooLarge) -> ResponseReturnValue:
        limit = app.config.get("MAX_CONTENT_LENGTH")
        body = {"error": {"code": "too_large", "message": f"the body must be under {limit} bytes"}}
        drain(request.environ)
        return jsonify(body), 413

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> ResponseReturnValue:
        code = (exc.name or "error").lower().replace(" ", "_")
        body = {"error": {"code": code, "message": exc.description or exc.name}}
        resp = jsonify(body)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(exc.valid_methods)  # RFC 9110 asks for it on 405
        return resp, exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> ResponseReturnValue:
        app.logger.error("unhandled error", exc_info=exc)
        return jsonify({"error": {"code": "internal", "message": "internal error"}}), 500
