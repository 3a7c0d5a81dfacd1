"""The supervised libvirt connection: reconnect with backoff, liveness probe, callbacks, `call`.

Callbacks run on libvirt's event thread and only enqueue `HypervisorEvent`s (a blocked event
loop starves the connection); every call goes through `call`, which translates libvirt's
errors and keeps a lost connection open until its last call has returned. `Hypervisor`
(operations.py) holds one and builds the agent's calls on it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from agent.errors import AgentError, CallTimeout, HypervisorUnavailable
from agent.hypervisor.loop import start_event_loop
from agent.hypervisor.records import EventSink, HypervisorEvent, translate
from shared.redact import redact_uri

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MIN_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 5.0
# Liveness: a cheap RPC every PROBE_EVERY_S; no answer within PROBE_DEADLINE_S and the
# connection counts as lost (what libvirt's keepalive 5 s x 3 would decide, see _open).
PROBE_EVERY_S = 5.0
PROBE_DEADLINE_S = 15.0


class Connection:
    """One libvirt connection, kept alive by a supervisor thread that reconnects with backoff.

    `on_open(conn)` runs for each new connection before any call can use it, and
    `on_domain_changed(uuid)` on libvirt's event thread for each lifecycle event before it is
    queued: whoever caches per-connection or per-domain facts forgets them there.
    `on_guest_agent(uuid)` runs there too when a guest agent comes or goes: it must not block.
    """

    def __init__(
        self,
        uri: str,
        events: EventSink,
        on_open: Callable[[libvirt.virConnect], None] | None = None,
        on_domain_changed: Callable[[str], None] | None = None,
        on_guest_agent: Callable[[str], None] | None = None,
    ) -> None:
        self.uri = uri
        self._on_open = on_open
        self._on_domain_changed = on_domain_changed
        self._on_guest_agent_hook = on_guest_agent
        # What logs and errors may show of the URI: it can carry credentials (SPEC §7).
        self._redacted = redact_uri(uri)
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

    def drop(self) -> None:
        """Gives the current connection up as lost: the supervisor reconnects (tests use it to
        put a reconnect exactly where they want it)."""
        self._dead.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _supervise(self) -> None:
        backoff = _MIN_BACKOFF_S
        while not self._stop.is_set():
            try:
                conn = self._open()
            except Exception as exc:
                logger.warning(
                    "libvirt %s not reachable (%s); retrying in %.1fs",
                    self._redacted.public,
                    self._redacted.scrub(str(exc)),
                    backoff,
                )
                self._stop.wait(backoff)
                backoff = min(_MAX_BACKOFF_S, backoff * 2)
                continue
            backoff = _MIN_BACKOFF_S
            logger.info("connected to libvirt %s", self._redacted.public)
            self._connected.set()
            self._emit(HypervisorEvent("connected"))
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
                            self._redacted.public,
                            now - probe_at,
                        )
                        self._dead.set()
                elif now - probe_at >= PROBE_EVERY_S:
                    probe_at = now
                    probe = threading.Thread(target=self._probe, name="libvirt-probe", daemon=True)
                    probe.start()
            if self._stop.is_set():
                return
            logger.warning("libvirt connection to %s lost; reconnecting", self._redacted.public)
            self._connected.clear()
            with self._lock:
                self._conn = None
            self._emit(HypervisorEvent("disconnected"))
            self._retire(conn)

    def _alive(self, conn: libvirt.virConnect) -> bool:
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def _probe(self) -> None:
        with contextlib.suppress(AgentError):
            self.call(lambda conn: conn.getLibVersion())

    def _open(self) -> libvirt.virConnect:
        conn = libvirt.open(self.uri)
        self._dead.clear()
        try:
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError as exc:
            logger.debug("close callback not supported: %s", exc)
        # No libvirt keepalive (`setKeepAlive(5, 3)` is the usual advice): when it closes a
        # connection to a frozen libvirtd while another thread waits in a call on it, libvirt
        # 9.0's client crashes that thread (SIGSEGV in its IO loop) once the daemon answers
        # again. The probe in _supervise detects the freeze instead, and a lost connection is
        # closed only after its last call returned (_retire), so the process survives the thaw.
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
        self._register_guest_agent(conn)
        if self._on_open is not None:
            self._on_open(conn)
        with self._lock:
            self._conn = conn
        return conn

    def _register_guest_agent(self, conn: libvirt.virConnect) -> None:
        """The guest agent's (dis)connections, when the driver reports them: without them the
        guest's data only follows at its slower cadence."""
        try:
            self._callback_ids.append(
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, self._on_guest_agent, None
                )
            )
        except libvirt.libvirtError as exc:
            logger.debug("guest agent events not supported: %s", exc)

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

    def _emit(self, ev: HypervisorEvent) -> None:
        """Never blocks libvirt's event loop: a full queue drops the event with an
        error line; the next tick's reconciliation republishes whatever it changed."""
        try:
            self._events.put_nowait(ev)
        except queue.Full:
            logger.error("event queue full: dropped %s event of %s", ev.kind, ev.uuid)

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        try:
            if self._on_domain_changed is not None:
                self._on_domain_changed(dom.UUIDString())
            self._emit(HypervisorEvent("lifecycle", dom.UUIDString(), dom.name(), event, detail))
        except Exception:
            logger.exception("lifecycle callback failed")

    def _on_reboot(self, _conn: Any, dom: Any, _opaque: Any) -> None:
        try:
            self._emit(HypervisorEvent("reboot", dom.UUIDString(), dom.name()))
        except Exception:
            logger.exception("reboot callback failed")

    def _on_guest_agent(
        self, _conn: Any, dom: Any, _state: int, _reason: int, _opaque: Any
    ) -> None:
        try:
            if self._on_guest_agent_hook is not None:
                self._on_guest_agent_hook(dom.UUIDString())
        except Exception:
            logger.exception("guest agent callback failed")

    # -- calls ------------------------------------------------------------------------------
    def call(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        """Runs `fn` on the current connection; libvirt's errors come out as `AgentError`s."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise HypervisorUnavailable(f"not connected to {self._redacted.public}")
            key = id(conn)
            self._inflight[key] = self._inflight.get(key, 0) + 1
        try:
            return fn(conn)
        except libvirt.libvirtError as exc:
            err = translate(exc)
            # libvirt's message may quote the URI; it goes to replies and events as it is.
            err.args = (self._redacted.scrub(str(err)),)
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
