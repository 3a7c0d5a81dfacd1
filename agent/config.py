"""The agent's settings (SPEC §8), read once from the environment."""

from __future__ import annotations

import socket

from pydantic import AliasChoices, Field, field_validator

from shared.messages import MAX_SNAPSHOTS
from shared.redact import RedactedUri, redact_uri
from shared.settings import ServiceSettings
from shared.topics import validate_host_id, validate_prefix


def _default_host_id() -> str:
    return socket.gethostname().split(".")[0].lower()


# The level names KVMSUP_LOG_LEVEL takes (logging's own, WARN and FATAL aside).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class AgentSettings(ServiceSettings):
    """Every setting of the agent (the broker's in `ServiceSettings`); seed names
    (`LIBVIRT_URI`) stay as they were."""

    libvirt_uri: str = Field(  # may hold credentials: shown only through `libvirt_redacted`
        default="qemu:///system",
        validation_alias=AliasChoices("LIBVIRT_URI", "KVMSUP_LIBVIRT_URI"),
        repr=False,
    )
    host_id: str = Field(default_factory=_default_host_id)
    metrics_interval: float = Field(default=2.0, gt=0.0, le=3600)
    vm_metrics_every: int = Field(default=5, ge=1)
    memory_stats_period: int = Field(default=5, ge=0)
    # Seconds between two readings of a running guest's inside; 0 reads none.
    guest_info_every: float = Field(default=30.0, ge=0, le=86_400)
    ha_discovery: bool = True
    ha_prefix: str = "homeassistant"
    command_workers: int = Field(default=4, ge=1, le=64)
    offline_queue: int = Field(default=1000, ge=10)
    # KVMSUP_SNAPSHOTS_MAX_PER_VM: one snapshot more is refused, none is ever deleted to make room.
    snapshots_max_per_vm: int = Field(default=20, ge=1, le=MAX_SNAPSHOTS)
    log_level: str = "INFO"

    # TopicError is a ValueError: pydantic reports its message as the field's error.
    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        return validate_host_id(value)

    @field_validator("ha_prefix")
    @classmethod
    def _ha_prefix(cls, value: str) -> str:
        return validate_prefix(value)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        """One of logging's level names, in any case; anything else would end the agent with
        a traceback when the level is set, instead of a bad-setting line."""
        name = value.strip().upper()
        if name not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return name

    @property
    def libvirt_redacted(self) -> RedactedUri:
        """The libvirt URI's public form and the secrets to scrub from what quotes it."""
        return redact_uri(self.libvirt_uri)

    def public_libvirt_uri(self) -> str:
        """The libvirt URI without credentials, for the status payload and logs (SPEC §3)."""
        return self.libvirt_redacted.public
