"""The agent's settings (SPEC §8), read once from the environment."""

from __future__ import annotations

import socket

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.broker_url import BrokerUrl, parse_broker_url
from shared.redact import RedactedUri, redact_uri
from shared.topics import TopicError, validate_host_id, validate_prefix


def _default_host_id() -> str:
    return socket.gethostname().split(".")[0].lower()


class AgentSettings(BaseSettings):
    """Every setting of the agent; seed names (`LIBVIRT_URI`) stay as they were."""

    model_config = SettingsConfigDict(env_prefix="KVMSUP_", extra="ignore", populate_by_name=True)

    libvirt_uri: str = Field(  # may hold credentials: shown only through `libvirt_redacted`
        default="qemu:///system",
        validation_alias=AliasChoices("LIBVIRT_URI", "KVMSUP_LIBVIRT_URI"),
        repr=False,
    )
    mqtt_url: str = Field(default="mqtt://127.0.0.1:1883", repr=False)  # may hold a password
    mqtt_ca: str | None = None
    mqtt_cert: str | None = None
    mqtt_key: str | None = None
    topic_prefix: str = "kvmsup"
    mqtt_keepalive: int = Field(default=15, ge=2, le=3600)
    host_id: str = Field(default_factory=_default_host_id)
    metrics_interval: float = Field(default=2.0, gt=0.0, le=3600)
    vm_metrics_every: int = Field(default=5, ge=1)
    memory_stats_period: int = Field(default=5, ge=0)
    ha_discovery: bool = True
    ha_prefix: str = "homeassistant"
    command_workers: int = Field(default=4, ge=1, le=64)
    offline_queue: int = Field(default=1000, ge=10)
    log_level: str = "INFO"

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        try:
            return validate_host_id(value)
        except TopicError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("topic_prefix", "ha_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        try:
            return validate_prefix(value)
        except TopicError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    @property
    def mqtt(self) -> BrokerUrl:
        return parse_broker_url(self.mqtt_url)

    @property
    def libvirt_redacted(self) -> RedactedUri:
        """The libvirt URI's public form and the secrets to scrub from what quotes it."""
        return redact_uri(self.libvirt_uri)

    def public_libvirt_uri(self) -> str:
        """The libvirt URI without credentials, for the status payload and logs (SPEC §3)."""
        return self.libvirt_redacted.public
