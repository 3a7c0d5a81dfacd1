"""`KVMSUP_MQTT_URL` (`mqtt://` or `mqtts://user:pass@host:port`) parsed once for both services.

User and password should be percent-encoded (`p/ss` → `p%2Fss`), as in any URL. A password with
`/`, `?`, `#` or `@` left as it is still parses: the credentials run to the last `@`, which a
broker address never contains. The flip side: a literal `%` followed by two hex digits is read as
an escape, so a password containing `%` must be written `%25`.

No error message quotes the URL or any part of it: it may hold a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

_SHAPE = "KVMSUP_MQTT_URL must look like mqtt://host:port or mqtts://user:pass@host:port"


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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}"

    __str__ = __repr__


def _host_port(address: str, tls: bool) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`, with at most a trailing `/`."""
    address = address.removesuffix("/")
    if any(c in address for c in "/?#"):
        raise ValueError(f"{_SHAPE} (nothing may follow the host and port)")
    port_text: str | None
    if address.startswith("["):
        host, closed, rest = address[1:].partition("]")
        if not closed or rest[:1] not in ("", ":"):
            raise ValueError(f"{_SHAPE} (a malformed [IPv6] host)")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = address.partition(":")
        port_text = port_text if colon else None
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{_SHAPE} (no host)")
    if port_text is None:
        return host, 8883 if tls else 1883
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        # Never quoted: with a `:` or `@` mistyped in the credentials it may be password text.
        raise ValueError(f"{_SHAPE} (the port must be a number from 1 to 65535)")
    return host, int(port_text)


def parse_broker_url(url: str) -> BrokerUrl:
    """ValueError for anything but mqtt[s]://[user[:pass]@]host[:port][/] (the message names the
    problem and never quotes the URL: it may hold a password)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"{_SHAPE} (the scheme must be mqtt or mqtts)")
    tls = scheme == "mqtts"
    userinfo, at, address = rest.rpartition("@")
    host, port = _host_port(address, tls)
    username = password = None
    if at:
        user_text, colon, pass_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(pass_text) if colon and pass_text else None
        if username is None:
            raise ValueError(f"{_SHAPE} (credentials without a user name)")
    return BrokerUrl(host=host, port=port, tls=tls, username=username, password=password)
