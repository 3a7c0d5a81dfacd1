"""The libvirt adapter: event-loop thread, connection supervisor, lookups, actions, bulk stats.

The only module that imports `libvirt`. It hands out plain values and `RawSample`s, never
`virDomain` objects; libvirt callbacks only enqueue `HypervisorEvent`s (PITFALLS 1-4).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import libvirt

from agent.bulkstats import BlockCounters, NetCounters, RawSample, parse_record
from agent.errors import (
    AgentError,
    CallTimeout,
    DomainNotFound,
    HypervisorError,
    HypervisorUnavailable,
)
from agent.metrics import BalloonStats

logger = logging.getLogger(__name__)

T = TypeVar("T")

STATS_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
# A domain whose job lock is held is returned without the job-bound groups (PITFALLS 4).
STATS_FLAGS = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT

_CONNECTION_ERRORS = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
}
_MIN_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 5.0
# Liveness: a cheap RPC every PROBE_EVERY_S; no answer within PROBE_DEADLINE_S and the
# connection counts as lost (what libvirt's keepalive 5 s x 3 would decide, see _open).
PROBE_EVERY_S = 5.0
PROBE_DEADLINE_S = 15.0

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _ignore_libvirt_error(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; ours are raised and logged instead."""


def start_event_loop() -> None:
    """Registers libvirt's default event loop and runs it in a daemon thread, once per process."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:
                    logger.exception("libvirt event loop iteration failed")
                    time.sleep(0.1)

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


@dataclass(frozen=True)
class DomainInfo:
    """A domain's identity and configuration as read at one instant."""

    uuid: str
    name: str
    state: int
    reason: int
    vcpus: int
    memory_kib: int
    max_memory_kib: int
    autostart: bool
    persistent: bool


@dataclass(frozen=True)
class NodeFacts:
    hypervisor_type: str
    hypervisor_version: str
    cpus: int
    memory_mb: int
    model: str


@dataclass(frozen=True)
class HypervisorEvent:
    """What the callbacks and the supervisor report; consumed by the service's event worker."""

    kind: Literal["lifecycle", "reboot", "connected", "disconnected"]
    uuid: str | None = None
    name: str | None = None
    event: int = -1
    detail: int = -1


def _version_text(version: int) -> str:
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"


def translate(exc: libvirt.libvirtError) -> Exception:
    """libvirtError → the agent's errors, keeping libvirt's own message."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(message)
    if exc.get_error_domain() == libvirt.VIR_FROM_RPC and "keepalive" in message:
        # libvirtd stopped answering (frozen, overloaded): the call hit a deadline, and the
        # request may still run once the daemon wakes up, so this is a timeout, not a failure.
        return CallTimeout(message)
    if code in _CONNECTION_ERRORS or exc.get_error_domain() == libvirt.VIR_FROM_RPC:
        return HypervisorUnavailable(message)
    err = HypervisorError(message)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        err.code = "invalid_state"
    elif code == libvirt.VIR_ERR_NO_SUPPORT:
        err.code = "unsupported"
    return err


class Hypervisor:
    """One libvirt connection, kept alive by a supervisor thread that reconnects with backoff."""

    def __init__(self, uri: str, events: queue.Queue[HypervisorEvent]) -> None:
        self.uri = uri
        self._events = events
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._dead = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._callback_ids: list[int] = []
        # A lost connection is closed only once no call runs on it any more: a frozen libvirtd
        # answers its queued calls when thawed, and those must land on an open client.
        self._inflight: dict[int, int] = {}
        self._retired: dict[int, tuple[libvirt.virConnect, list[int]]] = {}
        self._bulk_is_complete = True
        self._devices: dict[str, tuple[list[str], list[str]]] = {}
        # virDomain handles of the current connection: a command then costs one RPC, not two.
        self._domains: dict[str, Any] = {}
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        start_event_loop()
        self._thread = threading.Thread(
            target=self._supervise, name="libvirt-supervisor", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._dead.set()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            self._retire(conn)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def _supervise(self) -> None:
        backoff = _MIN_BACKOFF_S
        while not self._stop.is_set():
            try:
                conn = self._open()
            except Exception as exc:
                logger.warning(
                    "libvirt %s not reachable (%s); retrying in %.1fs", self.uri, exc, backoff
                )
                self._stop.wait(backoff)
                backoff = min(_MAX_BACKOFF_S, backoff * 2)
                continue
            backoff = _MIN_BACKOFF_S
            logger.info("connected to libvirt %s", self.uri)
            self._connected.set()
            self._events.put(HypervisorEvent("connected"))
            probe: threading.Thread | None = None
            probe_at = time.monotonic()
            while not self._stop.is_set() and not self._dead.wait(1.0):
                now = time.monotonic()
                if not self._alive(conn):
                    self._dead.set()
                elif probe is not None and probe.is_alive():
                    if now - probe_at > PROBE_DEADLINE_S:
                        logger.warning(
                            "libvirt %s did not answer for %.0fs: connection given up",
                            self.uri,
                            now - probe_at,
                        )
                        self._dead.set()
                elif now - probe_at >= PROBE_EVERY_S:
                    probe_at = now
                    probe = threading.Thread(target=self._probe, name="libvirt-probe", daemon=True)
                    probe.start()
            if self._stop.is_set():
                return
            logger.warning("libvirt connection to %s lost; reconnecting", self.uri)
            self._connected.clear()
            with self._lock:
                self._conn = None
            self._events.put(HypervisorEvent("disconnected"))
            self._retire(conn)

    def _alive(self, conn: libvirt.virConnect) -> bool:
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def _probe(self) -> None:
        with contextlib.suppress(AgentError):
            self._call(lambda conn: conn.getLibVersion())

    def _open(self) -> libvirt.virConnect:
        conn = libvirt.open(self.uri)
        self._dead.clear()
        try:
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError as exc:
            logger.debug("close callback not supported: %s", exc)
        # No libvirt keepalive (PITFALLS 3 asks for 5, 3): when it closes a connection to a
        # frozen libvirtd while another thread waits in a call on it, libvirt 9.0's client
        # crashes that thread (SIGSEGV in its IO loop) once the daemon answers again. The
        # probe in _supervise detects the freeze instead, and a lost connection is closed only
        # after its last call returned (_retire), so the process survives the thaw.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(-1, 0)
        self._callback_ids = [
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
            ),
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot, None
            ),
        ]
        # libvirt's test driver reports only the state group in bulk: fill the rest per domain.
        self._bulk_is_complete = conn.getType().upper() != "TEST"
        self._devices.clear()
        self._domains.clear()
        with self._lock:
            self._conn = conn
        return conn

    def _retire(self, conn: libvirt.virConnect) -> None:
        """Close a connection now, or when the last call still running on it returns."""
        callback_ids, self._callback_ids = self._callback_ids, []
        with self._lock:
            if self._inflight.get(id(conn), 0) > 0:
                logger.info("closing the old libvirt connection once its last call returns")
                self._retired[id(conn)] = (conn, callback_ids)
                return
        self._teardown(conn, callback_ids)

    def _teardown(self, conn: libvirt.virConnect, callback_ids: list[int]) -> None:
        for cb in callback_ids:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(cb)
        for close in (conn.unregisterCloseCallback, conn.close):
            with contextlib.suppress(libvirt.libvirtError):
                close()

    # -- callbacks (libvirt's event thread: enqueue and return) ----------------------------
    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        try:
            logger.warning("libvirt closed the connection (reason %s)", reason)
            self._dead.set()
        except Exception:
            logger.exception("close callback failed")

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        try:
            self._devices.pop(dom.UUIDString(), None)
            self._domains.pop(dom.UUIDString(), None)
            self._events.put(
                HypervisorEvent("lifecycle", dom.UUIDString(), dom.name(), event, detail)
            )
        except Exception:
            logger.exception("lifecycle callback failed")

    def _on_reboot(self, _conn: Any, dom: Any, _opaque: Any) -> None:
        try:
            self._events.put(HypervisorEvent("reboot", dom.UUIDString(), dom.name()))
        except Exception:
            logger.exception("reboot callback failed")

    # -- calls ------------------------------------------------------------------------------
    def _call(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise HypervisorUnavailable(f"not connected to {self.uri}")
            key = id(conn)
            self._inflight[key] = self._inflight.get(key, 0) + 1
        try:
            return fn(conn)
        except libvirt.libvirtError as exc:
            err = translate(exc)
            if isinstance(err, HypervisorUnavailable | CallTimeout):
                self._dead.set()
            raise err from exc
        finally:
            with self._lock:
                left = self._inflight.pop(key) - 1
                if left:
                    self._inflight[key] = left
                retired = None if left else self._retired.pop(key, None)
            if retired is not None:
                self._teardown(*retired)

    def node_facts(self) -> NodeFacts:
        def read(conn: libvirt.virConnect) -> NodeFacts:
            model, memory_mb, cpus, *_ = conn.getInfo()
            return NodeFacts(
                conn.getType(), _version_text(conn.getVersion()), int(cpus), int(memory_mb), model
            )

        return self._call(read)

    def node_cpu_stats(self) -> dict[str, int] | None:
        def read(conn: libvirt.virConnect) -> dict[str, int] | None:
            try:
                return {k: int(v) for k, v in conn.getCPUStats(-1).items()}
            except libvirt.libvirtError:
                return None

        return self._call(read)

    def node_free_memory_mb(self) -> int | None:
        def read(conn: libvirt.virConnect) -> int | None:
            try:
                free = int(conn.getFreeMemory())
            except libvirt.libvirtError:
                return None
            return free // (1024 * 1024) if free > 0 else None

        return self._call(read)

    def list_domains(self) -> list[DomainInfo]:
        def read(conn: libvirt.virConnect) -> list[DomainInfo]:
            infos = []
            for dom in conn.listAllDomains():
                try:
                    infos.append(_domain_info(dom))
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
            return infos

        return self._call(read)

    def _lookup(self, conn: libvirt.virConnect, uuid: str) -> Any:
        dom = self._domains.get(uuid)
        if dom is None:
            dom = conn.lookupByUUIDString(uuid)
            self._domains[uuid] = dom
        return dom

    def _on_domain(self, uuid: str, fn: Callable[[Any], T]) -> T:
        """Calls `fn` on the VM's handle; a handle that went stale is forgotten."""
        try:
            return self._call(lambda conn: fn(self._lookup(conn, uuid)))
        except DomainNotFound:
            self._domains.pop(uuid, None)
            raise

    def domain_info(self, uuid: str) -> DomainInfo:
        return self._on_domain(uuid, _domain_info)

    def domain_state(self, uuid: str) -> tuple[int, int]:
        """State and reason only: one RPC, for the command path."""
        state, reason = self._on_domain(uuid, lambda d: d.state())
        return int(state), int(reason)

    def perform(self, uuid: str, action: str) -> None:
        """Runs one lifecycle action; returns when libvirt has accepted it."""
        calls: dict[str, Callable[[Any], Any]] = {
            "start": lambda d: d.create(),
            "shutdown": lambda d: d.shutdown(),
            "destroy": lambda d: d.destroy(),
            "reboot": lambda d: d.reboot(0),
            "reset": lambda d: d.reset(0),
            "suspend": lambda d: d.suspend(),
            "resume": lambda d: d.resume(),
        }
        self._on_domain(uuid, calls[action])

    def set_memory_stats_period(self, uuid: str, period_s: int) -> bool:
        def apply(conn: libvirt.virConnect) -> bool:
            try:
                conn.lookupByUUIDString(uuid).setMemoryStatsPeriod(
                    period_s, libvirt.VIR_DOMAIN_AFFECT_LIVE
                )
                return True
            except libvirt.libvirtError as exc:
                logger.debug("memory stats period not set on %s: %s", uuid, exc)
                return False

        return self._call(apply)

    def sample(self) -> list[RawSample]:
        """One bulk stats call for every domain; per-domain fallback where the driver is silent."""
        return self._call(self._sample)

    def _sample(self, conn: libvirt.virConnect) -> list[RawSample]:
        records = conn.getAllDomainStats(STATS_GROUPS, STATS_FLAGS)
        taken = time.monotonic_ns()
        samples = []
        for dom, stats in records:
            raw = parse_record(dom.UUIDString(), dom.name(), stats, taken)
            if self._bulk_is_complete:
                active = raw.state not in (0, 5)
                if active and raw.cpu_time_ns is None:
                    raw = raw.with_fallback(stale=True)
            else:
                raw = self._fill_in(dom, raw)
            samples.append(raw)
        return samples

    def _fill_in(self, dom: Any, raw: RawSample) -> RawSample:
        """Per-domain calls for what the bulk record lacks (libvirt's test driver)."""
        try:
            _state, max_kib, cur_kib, vcpus, cpu_ns = dom.info()
            changes: dict[str, Any] = {
                "vcpus": raw.vcpus or int(vcpus),
                "max_memory_kib": raw.max_memory_kib or int(max_kib),
                "balloon": BalloonStats(current_kib=int(cur_kib)),
            }
            if raw.state in (0, 5):
                return raw.with_fallback(**changes)
            changes["cpu_time_ns"] = int(cpu_ns)
            disks, nics = self._device_names(dom)
            blocks = []
            for dev in disks:
                rd_reqs, rd_bytes, wr_reqs, wr_bytes, _errs = dom.blockStats(dev)
                blocks.append(BlockCounters(dev, rd_bytes, wr_bytes, rd_reqs, wr_reqs))
            nets = []
            for dev in nics:
                rx_b, _rx_p, rx_e, rx_d, tx_b, _tx_p, tx_e, tx_d = dom.interfaceStats(dev)
                nets.append(NetCounters(dev, rx_b, tx_b, rx_e, tx_e, rx_d, tx_d))
            changes["blocks"] = tuple(blocks)
            changes["nets"] = tuple(nets)
            return raw.with_fallback(**changes)
        except libvirt.libvirtError as exc:
            logger.debug("per-domain stats of %s failed: %s", raw.uuid, exc)
            return raw.with_fallback(stale=True)

    def _device_names(self, dom: Any) -> tuple[list[str], list[str]]:
        uuid = dom.UUIDString()
        cached = self._devices.get(uuid)
        if cached is None:
            root = ET.fromstring(dom.XMLDesc(0))
            disks = [
                t.get("dev", "")
                for t in root.findall("./devices/disk[@device='disk']/target")
                if t.get("dev")
            ]
            nics = [
                t.get("dev", "") for t in root.findall("./devices/interface/target") if t.get("dev")
            ]
            cached = (disks, nics)
            self._devices[uuid] = cached
        return cached


def _domain_info(dom: Any) -> DomainInfo:
    state, reason = dom.state()
    _s, max_kib, cur_kib, vcpus, _cpu = dom.info()
    try:
        autostart = bool(dom.autostart())
    except libvirt.libvirtError:
        autostart = False
    return DomainInfo(
        uuid=dom.UUIDString(),
        name=dom.name(),
        state=int(state),
        reason=int(reason),
        vcpus=int(vcpus),
        memory_kib=int(cur_kib),
        max_memory_kib=int(max_kib),
        autostart=autostart,
        persistent=bool(dom.isPersistent()),
    )
