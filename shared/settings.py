"""The settings both services read alike (SPEC §8): the broker, its TLS files, keepalive, topics.

Each service's own class (`agent/config.py`, `gateway/config.py`) subclasses `ServiceSettings`
and adds what only it reads. Both are frozen: read once at start-up and passed down, a setting
that changed under a running service would disagree with what it already set up from it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.broker_url import BrokerUrl, parse_broker_url
from shared.topics import validate_prefix

ENV_PREFIX = "KVMSUP_"
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
DEFAULT_TOPIC_PREFIX = "kvmsup"
# Seconds between pings when idle; the broker publishes the will within 1.5 times this.
DEFAULT_KEEPALIVE = 15
MIN_KEEPALIVE = 2
MAX_KEEPALIVE = 3600


class ServiceSettings(BaseSettings):
    """What connects a service to the broker; subclassed by each service's `Settings`."""

    # hide_input_in_errors: a ValidationError would otherwise quote the value it refused, and
    # the broker URL, the libvirt URI and the tokens hold secrets (SPEC §7), even in a traceback.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    mqtt_url: str = Field(DEFAULT_MQTT_URL, repr=False)  # may hold a password
    mqtt_ca: Path | None = None
    mqtt_cert: Path | None = None
    mqtt_key: Path | None = None
    mqtt_keepalive: int = Field(DEFAULT_KEEPALIVE, ge=MIN_KEEPALIVE, le=MAX_KEEPALIVE)
    topic_prefix: str = DEFAULT_TOPIC_PREFIX

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        """Checked with the other settings, not first when the bus connects: a bad URL is a
        settings error like the others. The parser's message never echoes the URL."""
        parse_broker_url(value)
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        return validate_prefix(value)

    @property
    def mqtt(self) -> BrokerUrl:
        """The parsed broker URL (its repr never shows the password)."""
        return parse_broker_url(self.mqtt_url)
