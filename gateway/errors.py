"""The gateway's domain errors: what went wrong, as a stable `code` and a message. They say
nothing about HTTP; the web layer (`http_errors.py`) maps each to its status code."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class InvalidInput(GatewayError):
    """A request, body or event payload the gateway cannot act on."""

    code = "bad_request"


class NotAuthenticated(GatewayError):
    """No credentials, or credentials that name nobody."""

    code = "unauthorized"


class NotPermitted(GatewayError):
    """A known caller whose role is too low for what it asked."""

    code = "forbidden"


class NotFound(GatewayError):
    """No VM, host, job or page by that name."""

    code = "not_found"


class Conflict(GatewayError):
    """The target is busy (a job in progress) or the name is ambiguous."""

    code = "conflict"


class Throttled(GatewayError):
    """Too many failures from the caller's address; `retry_after` says when to try again (s)."""

    code = "too_many_requests"


class Unavailable(GatewayError):
    """A dependency the request needs is down: broker, host, store."""

    code = "unavailable"


class AgentTimeout(GatewayError):
    """The agent did not answer a command in time (the job still runs)."""

    code = "agent_timeout"


class BusError(GatewayError):
    """The MQTT adapter could not hand a message to the broker."""

    code = "broker_unreachable"
