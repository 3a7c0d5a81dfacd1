"""The gateway's exceptions, and the one place they become SPEC §4's JSON errors."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed


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
