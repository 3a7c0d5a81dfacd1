"""The gateway's exceptions, and the one place they become SPEC §4's JSON errors."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class Unauthorized(GatewayError):
    status, code = 401, "unauthorized"


class Forbidden(GatewayError):
    status, code = 403, "forbidden"


class NotFound(GatewayError):
    status, code = 404, "not_found"


class Conflict(GatewayError):
    status, code = 409, "conflict"


class TooManyRequests(GatewayError):
    """Sent with `Retry-After` (its `retry_after`, seconds)."""

    status, code = 429, "too_many_requests"


class Unavailable(GatewayError):
    status, code = 503, "unavailable"


class AgentTimeout(GatewayError):
    status, code = 504, "agent_timeout"


class BusError(GatewayError):
    """The MQTT adapter could not hand a message to the broker."""

    status, code = 503, "broker_unreachable"


# Read (and discard) at most this much of a refused body before answering.
DRAIN_MAX = 1024 * 1024


def _drain(environ: dict[str, Any]) -> None:
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
        if isinstance(exc, Unauthorized):
            resp.headers["WWW-Authenticate"] = "Bearer"
        retry = exc.extra.get("retry_after")
        if isinstance(retry, int):
            resp.headers["Retry-After"] = str(retry)
        return resp, exc.status

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_exc: RequestEntityTooLarge) -> ResponseReturnValue:
        limit = app.config.get("MAX_CONTENT_LENGTH")
        body = {"error": {"code": "too_large", "message": f"the body must be under {limit} bytes"}}
        _drain(request.environ)
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
