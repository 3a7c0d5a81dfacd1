"""The gateway's settings (SPEC §8): read once from the environment into one object."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator

from gateway.core.state import DEFAULT_MAX_VMS_PER_HOST
from gateway.throttle import DEFAULT_IPV6_PREFIX
from shared.settings import ServiceSettings
from shared.topics import validate_gateway_id

# Default cap on open Socket.IO sessions. Under gunicorn's gevent worker an authenticated
# websocket client costs gateway memory (its greenlets, queues and buffers), not a thread: the
# cap is a memory bound (benchmarks/sio_fanout.py measures what a session weighs).
DEFAULT_MAX_SOCKETS = 10_000
MAX_MAX_SOCKETS = 1_000_000
# Connections the gevent worker keeps for REST on top of every Socket.IO request.
REST_CONNECTIONS = 1000


def default_gateway_id() -> str:
    """The hostname, lowercased and reduced to the characters a topic id may hold."""
    name = re.sub(r"[^a-z0-9_-]", "-", socket.gethostname().lower()).strip("-_")
    return (name or "gateway")[:63]


class Settings(ServiceSettings):
    """Everything the gateway reads from its environment (the broker's in `ServiceSettings`);
    nothing else touches `os.environ`."""

    # Seed names, kept without the prefix.
    host: str = Field("0.0.0.0", validation_alias=AliasChoices("HOST"))
    port: int = Field(5000, validation_alias=AliasChoices("PORT"))
    flask_debug: bool = Field(False, validation_alias=AliasChoices("FLASK_DEBUG"))

    gateway_id: str = Field(default_factory=default_gateway_id)

    auth: Literal["token", "none"] = "token"
    api_tokens: str | None = Field(None, repr=False)
    api_tokens_file: Path | None = None
    cors_origins: str | None = None
    # `Host` names the gateway answers to (comma-separated, `*` for any). Unset: any name with
    # tokens; with KVMSUP_AUTH=none only IP addresses and localhost (DNS rebinding).
    allowed_hosts: str | None = None
    db: str = "./data/gateway.db"

    # Gateway-specific tuning (documented in docs/API.md).
    accept_timeout: float = Field(5.0, gt=0, le=60)
    default_wait: float = Field(10.0, ge=0, le=300)
    max_wait: float = Field(120.0, gt=0)
    # History (docs/API.md): every tick for `history_minutes`, then 1-minute averages and
    # maxima for `history_1m_hours`, then 15-minute ones for `history_15m_days` (0: off).
    history_minutes: int = Field(60, ge=1, le=7 * 24 * 60)
    history_1m_hours: int = Field(24, ge=0, le=31 * 24)
    history_15m_days: int = Field(30, ge=0, le=3660)
    audit_days: int = Field(90, ge=1)
    jobs_keep: int = Field(1000, ge=10)
    # Deprecated and ignored: the thread pool of the former gthread worker. Still accepted (and
    # bounded as before) so an existing configuration starts; a warning says it does nothing.
    threads: int | None = Field(None, ge=4, le=1024)

    # Trust boundary of client connections (README settings table).
    sio_auth_timeout: float = Field(10.0, gt=0, le=300)
    # Under the gevent worker an open Socket.IO session costs memory (a few greenlets), not a
    # thread: the total is a memory bound, and `worker_connections` stays above it.
    max_sockets: int = Field(DEFAULT_MAX_SOCKETS, ge=1, le=MAX_MAX_SOCKETS)
    max_sockets_per_client: int = Field(16, ge=1)
    auth_fail_burst: int = Field(10, ge=1, le=10000)
    auth_fail_per_minute: float = Field(6.0, gt=0, le=60000)
    # Reverse proxies in front of the gateway whose X-Forwarded-For is believed (0: none, the
    # TCP peer is the client). Only set it when every request comes through those proxies.
    trusted_proxies: int = Field(0, ge=0, le=5)
    # Per-client limits count an IPv6 network of this many bits as one client.
    ipv6_prefix: int = Field(DEFAULT_IPV6_PREFIX, ge=32, le=128)
    # Input bounds (SPEC §7): what the gateway reads from clients and from the broker.
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_message_bytes: int = Field(1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    max_vms_per_host: int = Field(DEFAULT_MAX_VMS_PER_HOST, ge=1, le=1_000_000)
    # Seconds the broker keeps this gateway's session (subscriptions, QoS 1 replies and events)
    # while it is away, so a restarted gateway learns how its jobs ended; 0 = a clean session.
    mqtt_session_expiry: int = Field(600, ge=0, le=7 * 24 * 3600)
    # Several gateways behind one load balancer (docs/SCALING.md): a Redis URL through which
    # each gateway's `job_update`s reach the clients of the others. May hold a password.
    sio_message_queue: str | None = Field(None, repr=False)

    @field_validator("sio_message_queue")
    @classmethod
    def _message_queue(cls, value: str | None) -> str | None:
        if not value:
            return None  # set but empty (a compose file's `KVMSUP_SIO_MESSAGE_QUEUE=`): off
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value

    @field_validator("gateway_id")
    @classmethod
    def _gateway_id(cls, value: str) -> str:
        return validate_gateway_id(value)

    def socket_limit(self) -> int:
        """Open Socket.IO sessions at most, from all addresses together (503 beyond)."""
        return self.max_sockets

    def worker_connections(self) -> int:
        """Connections gunicorn's gevent worker serves at once. It stops accepting beyond that,
        so it must exceed what Socket.IO may hold: a session holds at most one request of each
        kind (long-poll GET, POST, websocket), two at once in practice (a poll and a POST, or
        the poll an upgrade replaces), and REST keeps its own room on top."""
        return 2 * self.socket_limit() + REST_CONNECTIONS

    def allowed_hosts_list(self) -> list[str]:
        """Lowercased names, without ports; empty: the default of `gateway.web.boundary`."""
        if not self.allowed_hosts:
            return []
        return [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]

    def cors_list(self) -> list[str]:
        """Exact origins only, never `*` (tokens ride on these requests); empty: same origin."""
        if not self.cors_origins:
            return []
        return [o.strip() for o in self.cors_origins.split(",") if o.strip() and o.strip() != "*"]
