"""The in-memory picture of every host and VM, fed only by MQTT, read by REST and Socket.IO
(history and events live in `store`)."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from gateway.errors import Conflict, NotFound
from shared.guest import GuestInfo
from shared.messages import (
    ACTIVE_STATES,
    CommandReply,
    GatewayStatus,
    HostMetrics,
    HostStatus,
    MetricsBatch,
    VmMetrics,
    VmSnapshots,
    VmState,
)
from shared.topics import UUID_RE

logger = logging.getLogger(__name__)

VmKey = tuple[str, str]  # (host, uuid)
Listener = Callable[[str, object], None]
# VMs the gateway keeps for one host (`KVMSUP_MAX_VMS_PER_HOST`): one host's credentials must
# not be able to grow every gateway's memory, views and pushes without end.
DEFAULT_MAX_VMS_PER_HOST = 4096


class HostFull(Exception):
    """A new VM of a host that already has as many as the gateway keeps for one host."""


@dataclass
class HostLoad:
    """The host part of the latest metrics batch."""

    metrics: HostMetrics
    interval_s: float
    ts: datetime


@dataclass
class Snapshot:
    """A consistent copy of the cache for one read (taken under the lock, used without it)."""

    hosts: dict[str, HostStatus]
    loads: dict[str, HostLoad]
    vms: dict[VmKey, VmState]
    metrics: dict[VmKey, VmMetrics] = field(default_factory=dict)
    # The cache's versions when the copy was taken (what a memoised view was built from).
    version: int = 0
    metrics_version: int = 0
    # What each VM's guest agent said last (`…/vm/<uuid>/guest`).
    guests: dict[VmKey, GuestInfo] = field(default_factory=dict)

    def online(self, host: str) -> bool:
        status = self.hosts.get(host)
        return bool(status and status.online)


def resolve(vms: Iterable[VmState], ref: str, host: str | None = None) -> VmState:
    """The one VM a name or UUID designates (SPEC §2): NotFound when none, Conflict with the
    candidates when several."""
    by_uuid = bool(UUID_RE.match(ref))
    found = [
        vm
        for vm in vms
        if (vm.uuid == ref if by_uuid else vm.name == ref) and (host is None or vm.host == host)
    ]
    if not found:
        where = f" on host {host!r}" if host else ""
        raise NotFound(f"no VM {ref!r}{where}")
    if len(found) > 1:
        candidates = [
            {"host": vm.host, "uuid": vm.uuid, "name": vm.name, "state": vm.state}
            for vm in sorted(found, key=lambda v: v.host)
        ]
        raise Conflict(
            f"VM name {ref!r} exists on several hosts; add ?host=<host_id>",
            code="ambiguous_name",
            candidates=candidates,
        )
    return found[0]


class StateCache:
    """Thread-safe; every change is reported to the listeners after the lock is released."""

    def __init__(self, max_vms_per_host: int = DEFAULT_MAX_VMS_PER_HOST) -> None:
        self._lock = threading.Lock()
        self._max_vms_per_host = max_vms_per_host
        self._vm_counts: Counter[str] = Counter()
        self._hosts: dict[str, HostStatus] = {}
        self._loads: dict[str, HostLoad] = {}
        self._vms: dict[VmKey, VmState] = {}
        self._metrics: dict[VmKey, VmMetrics] = {}
        self._gateways: dict[str, GatewayStatus] = {}
        self._snapshots: dict[VmKey, VmSnapshots] = {}
        self._guests: dict[VmKey, GuestInfo] = {}
        self._listeners: list[Listener] = []
        # Which keys hold a name or a uuid: `find` (every REST read of one VM, every command)
        # looks one up instead of scanning the fleet.
        self._by_name: dict[str, set[VmKey]] = {}
        self._by_uuid: dict[str, set[VmKey]] = {}
        self.version = 0  # bumped on every host/VM change; read views memoise on it
        self.metrics_version = 0  # bumped on every metrics batch applied

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, kind: str, item: object) -> None:
        for listener in self._listeners:
            try:
                listener(kind, item)
            except Exception:
                logger.exception("state listener failed on %s", kind)

    # -- writes (the MQTT ingest thread) ------------------------------------------------------
    def apply_host_status(self, status: HostStatus) -> None:
        with self._lock:
            self._hosts[status.host] = status
            self.version += 1
        self._emit("host_status", status)

    def apply_vm_state(self, state: VmState) -> bool:
        """False (and nothing changes) when `seq` is not newer than what is held; HostFull for
        a new VM of a host at its limit."""
        key = (state.host, state.uuid)
        with self._lock:
            held = self._vms.get(key)
            if held is not None and state.seq <= held.seq:
                logger.debug(
                    "dropped out-of-order state of %s (seq %d <= %d)", key, state.seq, held.seq
                )
                return False
            if held is None:
                if self._vm_counts[state.host] >= self._max_vms_per_host:
                    raise HostFull(
                        f"host {state.host} has {self._max_vms_per_host} VMs already, the "
                        "most the gateway keeps for one host (KVMSUP_MAX_VMS_PER_HOST)"
                    )
                self._vm_counts[state.host] += 1
            self._vms[key] = state
            if held is None or held.name != state.name:
                if held is not None:
                    self._unindex(held.name, held.uuid, key)
                self._by_name.setdefault(state.name, set()).add(key)
                self._by_uuid.setdefault(state.uuid, set()).add(key)
            self.version += 1
        self._emit("vm_state", state)
        return True

    def _unindex(self, name: str, uuid: str, key: VmKey) -> None:
        for index, ref in ((self._by_name, name), (self._by_uuid, uuid)):
            keys = index.get(ref)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[ref]

    def apply_command_result(self, reply: CommandReply) -> bool:
        """Read-your-writes: a command's final reply can reach the gateway a few ms before the
        agent's retained state does; the reply's state is shown at once. `seq` is kept, so the
        agent's own state (a higher seq) replaces it as soon as it comes. Nothing is pushed:
        that state brings the `vm_state` event."""
        if reply.status != "succeeded" or reply.state is None or reply.vm is None:
            return False
        key = (reply.host, reply.vm)
        with self._lock:
            held = self._vms.get(key)
            if held is None or held.state == reply.state or reply.ts <= held.ts:
                return False
            self._vms[key] = held.model_copy(
                update={
                    "state": reply.state,
                    "is_active": reply.state in ACTIVE_STATES,
                    "ts": reply.ts,
                }
            )
            self.version += 1
        return True

    def remove_vm(self, host: str, uuid: str) -> VmState | None:
        key = (host, uuid)
        with self._lock:
            gone = self._vms.pop(key, None)
            self._metrics.pop(key, None)
            self._snapshots.pop(key, None)
            self._guests.pop(key, None)
            if gone:
                self._vm_counts[host] -= 1
                if not self._vm_counts[host]:
                    del self._vm_counts[host]
                self._unindex(gone.name, gone.uuid, key)
                self.version += 1
        if gone:
            self._emit("vm_removed", gone)
        return gone

    def apply_metrics(
        self, batch: MetricsBatch
    ) -> tuple[MetricsBatch | None, list[tuple[str, str]]]:
        """Keep the entries of VMs this host has a state for; return the batch as kept and,
        for each entry left out, (reason, detail). The topic's host is the authority: an
        entry naming another host is dropped, and a uuid the gateway holds no state for would
        make a cache entry nothing ever evicts (a VM's metrics go when its state does). A batch
        of a host with no status is dropped whole (None), for the same reason."""
        host = batch.host
        kept: list[VmMetrics] = []
        dropped: list[tuple[str, str]] = []
        # One lock for the whole batch, and per entry only two dict look-ups and a store.
        with self._lock:
            if host not in self._hosts:
                return None, [("unknown_host", "no status for this host")]
            self._loads[host] = HostLoad(batch.host_metrics, batch.interval_s, batch.ts)
            vms, metrics = self._vms, self._metrics
            for m in batch.vms:
                key = (host, m.uuid)
                if m.host == host and key in vms:
                    metrics[key] = m
                    kept.append(m)
                elif m.host != host:
                    dropped.append(("identity", f"an entry names host {m.host!r}"))
                else:
                    dropped.append(("unknown_vm", f"no state for VM {m.uuid[:64]!r}"))
            self.metrics_version += 1
        if dropped:
            batch = batch.model_copy(update={"vms": kept})
        self._emit("metrics", batch)
        return batch, dropped

    def apply_vm_snapshots(self, snapshots: VmSnapshots) -> bool:
        """A VM's snapshot list; False (nothing kept) for a VM the gateway holds no state for
        (its list goes when its state does) or a list older than the one held."""
        key = (snapshots.host, snapshots.uuid)
        with self._lock:
            held = self._snapshots.get(key)
            if key not in self._vms or (held is not None and snapshots.ts < held.ts):
                return False
            self._snapshots[key] = snapshots
        self._emit("vm_snapshots", snapshots)
        return True

    def clear_snapshots(self, key: VmKey) -> None:
        with self._lock:
            self._snapshots.pop(key, None)

    def snapshots_of(self, key: VmKey) -> VmSnapshots | None:
        with self._lock:
            return self._snapshots.get(key)

    # -- what each VM's guest agent says ---------------------------------------------------------
    def apply_guest(self, guest: GuestInfo) -> bool:
        """False for a VM the gateway holds no state for (an entry nothing would evict: it goes
        with the VM's state). A message older than the one held changes nothing."""
        key = (guest.host, guest.uuid)
        with self._lock:
            if key not in self._vms:
                return False
            held = self._guests.get(key)
            if held is not None and guest.ts < held.ts:
                return True
            self._guests[key] = guest
        self._emit("vm_guest", guest)
        return True

    def clear_guest(self, host: str, uuid: str) -> bool:
        with self._lock:
            return self._guests.pop((host, uuid), None) is not None

    def guest_of(self, key: VmKey) -> GuestInfo | None:
        with self._lock:
            return self._guests.get(key)

    def apply_gateway_status(self, status: GatewayStatus) -> None:
        with self._lock:
            self._gateways[status.gateway] = status

    # -- reads --------------------------------------------------------------------------------
    def snapshot(self, with_metrics: bool = False) -> Snapshot:
        with self._lock:
            return Snapshot(
                dict(self._hosts),
                dict(self._loads),
                dict(self._vms),
                dict(self._metrics) if with_metrics else {},
                self.version,
                self.metrics_version,
                dict(self._guests),
            )

    def hosts(self) -> dict[str, HostStatus]:
        with self._lock:
            return dict(self._hosts)

    def find(self, ref: str, host: str | None = None) -> VmState:
        with self._lock:
            if host is not None and host not in self._hosts:
                raise NotFound(f"no host {host!r}", code="unknown_host")
            index = self._by_uuid if UUID_RE.match(ref) else self._by_name
            vms = [self._vms[key] for key in index.get(ref, ())]
        return resolve(vms, ref, host)

    def host(self, host: str) -> HostStatus | None:
        with self._lock:
            return self._hosts.get(host)

    def is_online(self, host: str) -> bool:
        status = self.host(host)
        return bool(status and status.online)

    def vm(self, key: VmKey) -> VmState | None:
        with self._lock:
            return self._vms.get(key)

    def metrics_of(self, key: VmKey) -> VmMetrics | None:
        with self._lock:
            return self._metrics.get(key)

    def gateways(self) -> list[GatewayStatus]:
        with self._lock:
            return list(self._gateways.values())
