"""`KVMSUP_MQTT_URL` (`mqtt://` or `mqtts://user:pass@host:port`) parsed once for both services."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never shows the password (SPEC §7)
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"

    __str__ = __repr__


def parse_broker_url(url: str) -> BrokerUrl:
    """ValueError for anything but mqtt[s]://[user:pass@]host[:port] (the URL is not echoed:
    it may hold a password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(
            "KVMSUP_MQTT_URL must look like mqtt://host:port or mqtts://user:pass@host:port"
        )
    tls = parts.scheme == "mqtts"
    return BrokerUrl(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
