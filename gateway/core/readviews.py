"""Fleet-wide reads kept ready: `GET /vms`, `/stats/summary`, `/hosts` as serialized bodies,
Socket.IO `vms_list` and `all_metrics` as built payloads.

A body is rebuilt only when the cache changed since it was built, never per request: at once
after a host or VM state change (a client that just ran a command sees its result), and at most
every `metrics_every_s` when only metrics moved (a fleet of 10,000 VMs brings thousands of those
a second, and a reader wants the figures of about the last tick, not every one of them). One
request rebuilds at a time; while it does, the others are answered with the body held, unless a
state change makes it wrong for them, then they wait for the new one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from gateway.core import views
from gateway.core.state import Snapshot, StateCache, VmKey
from shared import strict_json
from shared.messages import VmState

T = TypeVar("T")
Key = tuple[int, int]  # (state version, metrics version)

# How stale metrics figures in a fleet-wide body may be: about half an agent tick.
METRICS_EVERY_S = 1.0


def to_json(data: Any) -> bytes:
    """Compact JSON as Flask's `jsonify` writes it (ASCII-escaped, keys in insertion order)."""
    return strict_json.dumps(data, separators=(",", ":")).encode()


class Memo(Generic[T]):
    """One view: the value, the cache versions it was built from, and when."""

    def __init__(
        self,
        cache: StateCache,
        build: Callable[[Snapshot], T],
        *,
        with_metrics: bool,
        metrics_every_s: float,
    ) -> None:
        self._cache = cache
        self._build = build
        self._with_metrics = with_metrics
        self._metrics_every_s = metrics_every_s
        self._lock = threading.Lock()
        self._held: tuple[Key, float, T] | None = None

    def _fresh(self, held: tuple[Key, float, T] | None) -> bool:
        if held is None:
            return False
        (version, metrics_version), built_at, _ = held
        if version != self._cache.version:
            return False
        if not self._with_metrics or metrics_version == self._cache.metrics_version:
            return True
        return time.monotonic() - built_at < self._metrics_every_s

    def get(self) -> T:
        held = self._held
        if held is not None and self._fresh(held):
            return held[2]
        # When only metrics moved, the others answer with the body held rather than queue
        # behind the one rebuilding; after a state change (or before any body) they wait.
        wait = held is None or held[0][0] != self._cache.version
        if not self._lock.acquire(blocking=wait):
            assert held is not None
            return held[2]
        try:
            held = self._held
            if held is not None and self._fresh(held):
                return held[2]
            started = time.monotonic()
            snap = self._cache.snapshot(with_metrics=self._with_metrics)
            value = self._build(snap)
            self._held = ((snap.version, snap.metrics_version), started, value)
            return value
        finally:
            self._lock.release()


class VmsBody:
    """`GET /vms` as bytes, from one JSON fragment per VM kept until that VM's state (or its
    host's online flag) changes: a state change re-renders one entry, then joins."""

    def __init__(self) -> None:
        self._frags: dict[VmKey, tuple[VmState, bool, bytes]] = {}

    def __call__(self, snap: Snapshot) -> bytes:
        held = self._frags
        frags: dict[VmKey, tuple[VmState, bool, bytes]] = {}
        parts: list[bytes] = []
        online = {h: bool(s.online) for h, s in snap.hosts.items()}
        for vm in sorted(snap.vms.values(), key=lambda v: (v.name, v.host)):
            key = (vm.host, vm.uuid)
            up = online.get(vm.host, False)
            frag = held.get(key)
            if frag is None or frag[0] is not vm or frag[1] != up:
                frag = (vm, up, to_json(views.vm_summary(vm, up)))
            frags[key] = frag
            parts.append(frag[2])
        self._frags = frags
        return b'{"count":%d,"vms":[%b]}' % (len(parts), b",".join(parts))


class ReadViews:
    """Every fleet-wide read of one gateway (thread- and greenlet-safe)."""

    def __init__(self, cache: StateCache, metrics_every_s: float = METRICS_EVERY_S) -> None:
        def memo(build: Callable[[Snapshot], T], with_metrics: bool) -> Memo[T]:
            return Memo(cache, build, with_metrics=with_metrics, metrics_every_s=metrics_every_s)

        self._vms_body = memo(VmsBody(), False)
        self._vms_list = memo(views.vms_list, False)
        # The host list carries each host's last load: it moves with metrics too.
        self._hosts_body = memo(lambda s: to_json(views.hosts_list(s)), True)
        self._summary_body = memo(lambda s: to_json(views.summary(s)), True)
        self._all_metrics = memo(views.all_metrics, True)

    def vms_body(self) -> bytes:
        return self._vms_body.get()

    def vms_list(self) -> dict[str, Any]:
        return self._vms_list.get()

    def hosts_body(self) -> bytes:
        return self._hosts_body.get()

    def summary_body(self) -> bytes:
        return self._summary_body.get()

    def all_metrics(self) -> dict[str, Any]:
        return self._all_metrics.get()
