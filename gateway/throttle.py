"""Failed-authentication throttle: one token bucket per client (SPEC §7), and what counts as
one client: an IPv4 address, or an IPv6 network of `KVMSUP_IPV6_PREFIX` bits."""

from __future__ import annotations

import ipaddress
import math
import threading
from dataclasses import dataclass

# One IPv6 subscriber is given a /64 (or more): counting its addresses one by one would give
# a guesser as many buckets, and a socket hog as many quotas, as it has addresses.
DEFAULT_IPV6_PREFIX = 64


def client_key(address: str, v6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The address a per-client limit counts: IPv6 cut to its `v6_prefix` network (an
    IPv4-mapped one is its IPv4 address), anything else as it is."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, v6_prefix), strict=False))
    return address


@dataclass
class Bucket:
    tokens: float
    at: float  # when `tokens` was last brought up to date


class FailureThrottle:
    """Each failed authentication takes one token from its address's bucket; the bucket holds
    `burst` tokens and refills at `per_minute`. An address with less than one token left is
    refused without its secret even being looked at, until the bucket refills: a guesser gets
    `per_minute` tries a minute after the first `burst`. Nothing sleeps, so no thread is held.

    Memory is bounded: a full bucket is the same as no bucket, and when more than `max_tracked`
    addresses are tracked, full buckets are dropped first, then the oldest."""

    def __init__(
        self,
        burst: int,
        per_minute: float,
        max_tracked: int = 10000,
        v6_prefix: int = DEFAULT_IPV6_PREFIX,
    ) -> None:
        self.v6_prefix = v6_prefix
        self.burst = float(burst)
        self.rate = per_minute / 60.0
        self.max_tracked = max_tracked
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def _level(self, bucket: Bucket, now: float) -> float:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        return bucket.tokens

    def retry_after(self, address: str, now: float) -> int:
        """Seconds until `address` may try again; 0 when it may try now."""
        address = client_key(address, self.v6_prefix)
        with self._lock:
            bucket = self._buckets.get(address)
            if bucket is None:
                return 0
            return self._wait(self._level(bucket, now))

    def fail(self, address: str, now: float) -> int:
        """Record one failure; returns the seconds the address is now blocked for (0: not)."""
        self.take(address, now)
        return self.blocked_for(address, now)

    def take(self, address: str, now: float) -> int:
        """Reserve one token for an attempt about to be checked: 0 when taken, else the
        seconds until the address may try again (nothing taken). Taking before the check,
        in one step, keeps concurrent attempts from all passing on the same last token;
        `give_back` returns it when the attempt did not fail."""
        address = client_key(address, self.v6_prefix)
        with self._lock:
            bucket = self._buckets.get(address)
            if bucket is None:
                self._prune(now)
                bucket = self._buckets[address] = Bucket(self.burst, now)
            level = self._level(bucket, now)
            if level < 1.0:
                return self._wait(level)
            bucket.tokens = level - 1.0
            return 0

    def give_back(self, address: str, now: float) -> None:
        """Return the token `take` reserved: the attempt succeeded (or was not a guess)."""
        address = client_key(address, self.v6_prefix)
        with self._lock:
            bucket = self._buckets.get(address)
            if bucket is None:
                return
            if self._level(bucket, now) + 1.0 >= self.burst:
                del self._buckets[address]  # full again: the same as no bucket
            else:
                bucket.tokens += 1.0

    def blocked_for(self, address: str, now: float) -> int:
        """After a failed attempt: the seconds the address is blocked for now (0: not)."""
        address = client_key(address, self.v6_prefix)
        with self._lock:
            bucket = self._buckets.get(address)
            return 0 if bucket is None else self._wait(self._level(bucket, now))

    def _wait(self, level: float) -> int:
        return 0 if level >= 1.0 else max(1, math.ceil((1.0 - level) / self.rate))

    def _prune(self, now: float) -> None:
        """Make room when the table is full: sweep out the full buckets, then the oldest,
        down to three quarters, so a sweep comes once per `max_tracked / 4` new addresses
        at most rather than for each new one."""
        if len(self._buckets) < self.max_tracked:
            return
        for address, bucket in list(self._buckets.items()):
            if self._level(bucket, now) >= self.burst:
                del self._buckets[address]
        target = self.max_tracked * 3 // 4
        while len(self._buckets) > target:
            del self._buckets[next(iter(self._buckets))]

    def tracked(self) -> int:
        with self._lock:
            return len(self._buckets)
