"""The gateway's settings (SPEC §8): read once from the environment into one object."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.broker_url import parse_broker_url
from shared.topics import validate_gateway_id, validate_prefix


def default_gateway_id() -> str:
    """The hostname, lowercased and reduced to the characters a topic id may hold."""
    name = re.sub(r"[^a-z0-9_-]", "-", socket.gethostname().lower()).strip("-_")
    return (name or "gateway")[:63]


class Settings(BaseSettings):
    """Everything the gateway reads from its environment; nothing else touches `os.environ`."""

    # hide_input_in_errors: a ValidationError would otherwise quote the value it refused, and
    # the broker URL and the tokens hold secrets (SPEC §7), even in a gunicorn traceback.
    model_config = SettingsConfigDict(
        env_prefix="KVMSUP_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    # Seed names, kept without the prefix.
    host: str = Field("0.0.0.0", validation_alias=AliasChoices("HOST"))
    port: int = Field(5000, validation_alias=AliasChoices("PORT"))
    flask_debug: bool = Field(False, validation_alias=AliasChoices("FLASK_DEBUG"))

    mqtt_url: str = Field("mqtt://127.0.0.1:1883", repr=False)  # may hold a password
    mqtt_ca: Path | None = None
    mqtt_cert: Path | None = None
    mqtt_key: Path | None = None
    mqtt_keepalive: int = Field(15, ge=2, le=3600)
    topic_prefix: str = "kvmsup"
    gateway_id: str = Field(default_factory=default_gateway_id)

    auth: Literal["token", "none"] = "token"
    api_tokens: str | None = Field(None, repr=False)
    api_tokens_file: Path | None = None
    cors_origins: str | None = None
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
    threads: int = Field(64, ge=4, le=1024)

    # Trust boundary of client connections (README settings table).
    sio_auth_timeout: float = Field(10.0, gt=0, le=300)
    max_sockets: int | None = Field(None, ge=1)
    max_sockets_per_client: int = Field(16, ge=1)
    auth_fail_burst: int = Field(10, ge=1, le=10000)
    auth_fail_per_minute: float = Field(6.0, gt=0, le=60000)
    # Reverse proxies in front of the gateway whose X-Forwarded-For is believed (0: none, the
    # TCP peer is the client). Only set it when every request comes through those proxies.
    trusted_proxies: int = Field(0, ge=0, le=5)
    # Input bounds (SPEC §7): what the gateway reads from clients and from the broker.
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_message_bytes: int = Field(1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    # Seconds the broker keeps this gateway's session (subscriptions, QoS 1 replies and events)
    # while it is away, so a restarted gateway learns how its jobs ended; 0 = a clean session.
    mqtt_session_expiry: int = Field(600, ge=0, le=7 * 24 * 3600)

    @field_validator("gateway_id")
    @classmethod
    def _gateway_id(cls, value: str) -> str:
        return validate_gateway_id(value)

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        """Checked here, not first in the bus (a worker traceback, exit 3): a bad URL is a
        settings error like the others. The parser's message never echoes the URL."""
        parse_broker_url(value)
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return validate_prefix(value)

    def socket_limit(self) -> int:
        """Open Socket.IO sessions at most: by default the thread pool less a few threads kept
        for REST, since each websocket holds a gunicorn thread for as long as it is open."""
        if self.max_sockets is not None:
            return self.max_sockets
        return max(1, self.threads - max(2, self.threads // 8))

    def cors_list(self) -> list[str]:
        """Exact origins only, never `*` (tokens ride on these requests); empty: same origin."""
        if not self.cors_origins:
            return []
        return [o.strip() for o in self.cors_origins.split(",") if o.strip() and o.strip() != "*"]
