"""Keeping the credentials a libvirt URI may carry out of logs, status payloads and replies.

A libvirt URI can hold a password (`qemu+ssh://user:pass@host/system`) and query parameters that
carry secrets (`?password=`); libvirt's own error messages may quote the URI back.
`redact_uri` gives the URI as it may be shown (no user information, secret parameter values
replaced) and the secret pieces, which `scrub` removes from any text, such as an error message
going to an API client. `ScrubFilter` does the same to every log record of a process.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

MASK = "***"
# Shorter secrets are kept out of the URI shown but not masked in free text: masking a one- or
# two-letter password everywhere garbles every message (`c***nnot connect`) and hides nothing.
MIN_SCRUB_LEN = 4
# Query parameters whose value is a secret. Not `keyfile` or `pkipath`: those name where a key
# lives, which an operator needs to see, and masking a short path everywhere garbles messages.
_SECRET_PARAM = re.compile(r"pass|secret|token|cred", re.IGNORECASE)


@dataclass(frozen=True)
class RedactedUri:
    raw: str = field(repr=False)
    public: str  # the URI without user information and with secret parameter values masked
    secrets: tuple[str, ...] = field(repr=False)  # longest first: one inside another goes whole

    def scrub(self, text: str) -> str:
        """`text` with the URI shown in its public form and every secret piece masked."""
        if self.raw != self.public:
            text = text.replace(self.raw, self.public)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


def _split_userinfo(rest: str) -> tuple[str, str]:
    """`user:pass@` and what follows, from the text after `scheme://`.

    By the URI rules the authority ends at the first `/`, `?` or `#`, and the user information
    at the `@` before the host. A password may hold those characters unencoded (`u:p@ss/w0rd@h`),
    which makes the split ambiguous, so the rule chosen is the one that never shows a piece of
    a password: everything up to the last `@` before the query is user information. A password
    with an unencoded `?` ends that part early (`u:pa?ss@host`): its first part then reads as a
    `host:port` whose port is no number, and the credentials run to the last `@` instead.
    """
    if rest.startswith("/"):
        return "", rest  # no authority, so no user information (`test:///node@1.xml`)
    head, qmark, query = rest.partition("?")
    if "@" in head:
        userinfo, _, after = head.rpartition("@")
        return userinfo, after + qmark + query
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    authority = rest[:end]
    _, colon, port = authority.rpartition(":")
    mangled = colon and not authority.startswith("[") and not port.isdigit()
    if mangled and "@" in rest[end:]:
        userinfo, _, after = rest.rpartition("@")
        return userinfo, after
    return "", rest


def _query(query: str, secrets: list[str]) -> str:
    pairs = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if eq and value and _SECRET_PARAM.search(name):
            secrets.append(value)
            pair = f"{name}={MASK}"
        pairs.append(pair)
    return "&".join(pairs)


def redact_uri(uri: str) -> RedactedUri:
    secrets: list[str] = []
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "", uri
    userinfo, rest = _split_userinfo(rest)
    if userinfo:
        # A user name alone is no secret, and masking it would garble every line naming it.
        _user, colon, password = userinfo.partition(":")
        if colon and password:
            secrets += [password, userinfo]
    hier, qmark, query = rest.partition("?")
    public = f"{scheme}{sep}{hier}"
    if qmark:
        public += "?" + _query(query, secrets)
    # Percent-decoded forms too: libvirt decodes the URI before it uses (and quotes) its parts.
    secrets += [unquote(s) for s in secrets if "%" in s]
    unique = sorted({s for s in secrets if len(s) >= MIN_SCRUB_LEN}, key=len, reverse=True)
    return RedactedUri(uri, public, tuple(unique))


class ScrubFilter(logging.Filter):
    """Masks the secrets in every record it passes: message, arguments and traceback."""

    def __init__(self, redacted: RedactedUri) -> None:
        super().__init__()
        self.redacted = redacted

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redacted.secrets and self.redacted.raw == self.redacted.public:
            return True
        message = record.getMessage()
        record.msg, record.args = self.redacted.scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redacted.scrub(record.exc_text)
        return True
