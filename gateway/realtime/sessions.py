"""Engine.IO session admission and lifetime: per-client and total caps, the deadline to
authenticate, closing refused sessions, and packets that do not decode (SPEC §5, §7). A
session costs memory and the worker takes a bounded number of connections: unauthenticated
sessions must not linger, no one client may hold many, all stay below a total."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from socketio import packet as sio_packet

from gateway.realtime.sio_packets import decode, error_frames, event_problem
from gateway.throttle import DEFAULT_IPV6_PREFIX, client_key

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# environ key of a request's Ticket. Flask-SocketIO hands engine.io a copy of the environ, so
# what the middleware and the engine.io handlers share is this one mutable object.
TICKET = "kvmsup.socket_ticket"
# Time a closed session's client gets to read the close before its TCP socket is shut down.
CLOSE_GRACE = 2.0


@dataclass(eq=False)
class Ticket:
    """One HTTP request to the engine.io endpoint."""

    address: str
    sock: Any  # the request's TCP socket, where the server exposes it
    reserved: bool = False  # holds a slot no session owns yet
    eio_sid: str | None = None
    kind: str = "poll"  # "poll" (a GET), "websocket" or "post": see request_kind()


@dataclass
class Session:
    address: str
    authenticated: bool = False
    released: bool = False  # its slot is given back; kept only to shut a stuck request down
    requests: set[Ticket] = field(default_factory=set)  # its requests still being served


class SessionGuard:
    """Hooks into one Socket.IO server's engine.io layer and the WSGI app in front of it."""

    def __init__(
        self,
        server: Any,  # socketio.Server
        *,
        auth_timeout: float,
        per_client: int,
        total: int,
        path: str = "/socket.io/",
        v6_prefix: int = DEFAULT_IPV6_PREFIX,
    ) -> None:
        self.v6_prefix = v6_prefix
        self.server = server
        self.eio = server.eio
        self.auth_timeout = auth_timeout
        self.per_client = per_client
        self.total = total
        self.path = path
        self.sessions: dict[str, Session] = {}
        self._open: Counter[str] = Counter()  # by address: sessions + reserved slots
        self._lock = threading.Lock()
        self._due: list[tuple[float, int, str, str]] = []  # (when, tie, kind, eio_sid)
        self._tie = itertools.count()
        self._wake = threading.Condition(self._lock)
        self._reaper: threading.Thread | None = None

    # -- wiring ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the one reaper thread (a greenlet under gevent) that closes sessions past
        their deadlines. The server entry point calls it; until then deadlines only queue."""
        with self._lock:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="sio-reaper", daemon=True)
                self._reaper.start()

    def install(self, app: Any) -> None:
        """Wrap the engine.io handlers python-socketio registered, and the WSGI app."""
        handlers = self.eio.handlers
        on_connect, on_message = handlers["connect"], handlers["message"]
        on_disconnect = handlers["disconnect"]

        def connect(eio_sid: str, environ: dict[str, Any]) -> Any:
            self._bind(eio_sid, environ)
            return on_connect(eio_sid, environ)

        def message(eio_sid: str, data: Any) -> Any:
            return self._message(eio_sid, data, on_message)

        def disconnect(eio_sid: str, reason: Any = None) -> Any:
            try:
                return on_disconnect(eio_sid, reason)
            finally:
                self._release(eio_sid)

        self.eio.on("connect", connect)
        self.eio.on("message", message)
        self.eio.on("disconnect", disconnect)
        app.wsgi_app = self._middleware(app.wsgi_app)
        # engine.io checks a websocket message's size only once simple-websocket has buffered
        # all of it: make simple-websocket stop at the same limit (a copy: the mapping is the
        # async driver module's own, shared by every server).
        drivers = dict(self.eio._async)
        driver: Any = drivers.get("websocket")
        if isinstance(driver, type):
            drivers["websocket"] = _limited(driver, self.eio.max_http_buffer_size)
            self.eio._async = drivers

    def _middleware(self, inner: WSGIApp) -> WSGIApp:
        def guard(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if not environ.get("PATH_INFO", "").startswith(self.path):
                return inner(environ, start_response)
            sid = parse_qs(environ.get("QUERY_STRING", "")).get("sid", [None])[0]
            raw = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
            address = client_key(environ.get("REMOTE_ADDR") or "unknown", self.v6_prefix)
            ticket = environ[TICKET] = Ticket(address, raw, kind=request_kind(environ))
            if sid is None:  # a new engine.io session: take a slot first
                refusal = self._reserve(ticket.address)
                if refusal is not None:
                    return _refuse(start_response, *refusal)
                ticket.reserved = True
            else:
                problem = self._attach(sid, ticket)
                if problem is not None:
                    return _bad_request(start_response, problem)
            try:
                return inner(environ, start_response)
            except (StopIteration, ConnectionError):
                raise  # how simple-websocket tells gunicorn / Werkzeug that a websocket ended
            except Exception as exc:
                eio_sid = ticket.eio_sid
                if eio_sid is None:
                    raise
                # engine.io lets a frame it cannot decode (an empty one, say) escape its
                # websocket loop: end that session with one log line instead of a traceback.
                self.close(eio_sid, f"malformed engine.io frame ({type(exc).__name__})")
                if "gunicorn.socket" in environ:
                    raise StopIteration from None
                raise ConnectionError from None
            finally:
                self._detach(ticket)

        return guard

    # -- bookkeeping -----------------------------------------------------------------------

    def _reserve(self, address: str) -> tuple[int, str, str] | None:
        with self._lock:
            if self._open[address] >= self.per_client:
                return 429, "too_many_sockets", "too many open Socket.IO connections from here"
            if sum(self._open.values()) >= self.total:
                return 503, "server_busy", "the gateway has no room for more Socket.IO clients"
            self._open[address] += 1
        return None

    def _bind(self, eio_sid: str, environ: dict[str, Any]) -> None:
        """A session opened (engine.io `connect`, in the request that took the slot)."""
        ticket = environ.get(TICKET)
        with self._lock:
            if not isinstance(ticket, Ticket):  # not through the middleware: count it anyway
                address = client_key(environ.get("REMOTE_ADDR") or "unknown", self.v6_prefix)
                ticket = Ticket(address, None)
                self._open[ticket.address] += 1
            ticket.reserved = False  # the session owns the slot now
            ticket.eio_sid = eio_sid
            self.sessions[eio_sid] = Session(ticket.address, requests={ticket})
            self._schedule(time.monotonic() + self.auth_timeout, "auth", eio_sid)

    def _attach(self, eio_sid: str, ticket: Ticket) -> str | None:
        """Count a request on an existing session; why it is refused, or None.

        Only a handshake takes a slot, so a session may not hold more than one request of a
        kind at a time: engine.io itself lets any number of long-poll GETs (or websocket
        upgrades) wait on one session, and each of them holds one of the worker's
        connections."""
        with self._lock:
            session = self.sessions.get(eio_sid)
            if session is None or session.released:
                return f"Invalid session {eio_sid[:64]}"
            if any(t.kind == ticket.kind for t in session.requests):
                return f"a {ticket.kind} request is already in progress on this session"
            ticket.eio_sid = eio_sid
            session.requests.add(ticket)
        return None

    def _detach(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.reserved:  # the slot was never bound to a session
                ticket.reserved = False
                self._drop(ticket.address)
            session = self.sessions.get(ticket.eio_sid or "")
            if session is not None:
                session.requests.discard(ticket)

    def _release(self, eio_sid: str) -> None:
        with self._lock:
            session = self.sessions.get(eio_sid)
            if session is None or session.released:
                return
            session.released = True
            self._drop(session.address)
            if session.requests:
                # Its websocket request may be stuck reading from a client that ignores the
                # close: shut that TCP socket down if the request is still there in a moment.
                self._schedule(time.monotonic() + CLOSE_GRACE, "kill", eio_sid)
            else:
                del self.sessions[eio_sid]

    def _drop(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def authenticated(self, eio_sid: str | None) -> None:
        """The session passed the connect handler: its deadline no longer applies."""
        with self._lock:
            session = self.sessions.get(eio_sid or "")
            if session is not None:
                session.authenticated = True

    def is_authenticated(self, eio_sid: str) -> bool:
        with self._lock:
            session = self.sessions.get(eio_sid)
            return session is not None and session.authenticated and not session.released

    # -- packets ---------------------------------------------------------------------------

    def _message(self, eio_sid: str, data: Any, inner: Callable[[str, Any], Any]) -> Any:
        """Check a client packet before python-socketio sees it; close what must be closed."""
        try:
            pkt = decode(self.server.packet_class, data)
        except ValueError as exc:  # a protocol violation, not a gateway bug: one log line
            self.close(eio_sid, f"malformed Socket.IO packet: {exc}")
            return None
        if pkt.packet_type == sio_packet.EVENT:
            problem = event_problem(pkt.data)
            if problem is not None:
                # Not connected to the namespace: python-socketio would ignore it too.
                if self.is_authenticated(eio_sid):
                    for frame in error_frames(self.server.packet_class, pkt, problem):
                        self.eio.send(eio_sid, frame)
                return None
        result = inner(eio_sid, data)
        # A refused CONNECT (its CONNECT_ERROR is queued already), or a client that left the
        # namespace: nothing more can happen on this transport, so end it.
        if pkt.packet_type == sio_packet.DISCONNECT:
            self.close(eio_sid, "left the namespace", logging.DEBUG)
        elif pkt.packet_type == sio_packet.CONNECT and not self.is_authenticated(eio_sid):
            # already logged (or, once throttled, counted) by the authenticator
            self.close(eio_sid, "refused at connect", logging.DEBUG)
        return result

    # -- closing ---------------------------------------------------------------------------

    def close(self, eio_sid: str, why: str, level: int = logging.INFO) -> None:
        """End an engine.io session from the server side without waiting for its queue to
        drain (a polling client that went away would never drain it)."""
        sock = self.eio.sockets.get(eio_sid)
        with self._lock:
            session = self.sessions.get(eio_sid)
        address = session.address if session else "?"
        logger.log(level, "closing a Socket.IO session from %s: %s", address, why)
        if sock is not None and not sock.closed:
            sock.close(wait=False, reason=self.eio.reason.SERVER_DISCONNECT)
        elif session is not None:
            self._release(eio_sid)

    def _schedule(self, when: float, kind: str, eio_sid: str) -> None:
        """Called with the lock held. The reaper `start` made serves every session's deadline."""
        heapq.heappush(self._due, (when, next(self._tie), kind, eio_sid))
        self._wake.notify()

    def _reap(self) -> None:
        while True:
            with self._lock:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, kind, eio_sid = heapq.heappop(self._due)
                session = self.sessions.get(eio_sid)
            try:
                if session is None:
                    continue
                if kind == "auth" and not (session.authenticated or session.released):
                    self.close(eio_sid, f"not authenticated within {self.auth_timeout:g} s")
                elif kind == "kill":
                    self._kill(eio_sid, session)
            except Exception:
                logger.exception("closing Socket.IO session %s failed", eio_sid)

    def _kill(self, eio_sid: str, session: Session) -> None:
        with self._lock:
            if self.sessions.get(eio_sid) is session:
                del self.sessions[eio_sid]
            tickets = list(session.requests)
        for ticket in tickets:
            raw = ticket.sock
            if isinstance(raw, socket.socket):
                with contextlib.suppress(OSError):  # already closed: what we wanted
                    raw.shutdown(socket.SHUT_RDWR)


def _limited(driver: type, limit: int) -> type:
    """engine.io's websocket driver, with simple-websocket's message size limit and a quiet
    close. The gevent driver passes its own arguments to simple-websocket and takes no extra
    ones, so the limit is added to the arguments it keeps rather than to its constructor."""

    class Limited(driver):  # type: ignore[misc]
        def __init__(self, handler: Any, server: Any, **kwargs: Any) -> None:
            super().__init__(handler, server, **kwargs)
            server_args = getattr(self, "server_args", None)
            if isinstance(server_args, dict):
                server_args["max_message_size"] = limit

        def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            raw = environ.get("gunicorn.socket")
            if raw is not None:
                environ = {**environ, "gunicorn.socket": WholeSends(raw)}
            return super().__call__(environ, start_response)

        def close(self) -> None:
            # engine.io's writer closes the websocket once its session ends; when the session
            # ended because its request failed (a malformed frame), the server may have closed
            # the TCP socket already, and the close must not become a background traceback.
            with contextlib.suppress(OSError):
                super().close()

    Limited.__name__ = Limited.__qualname__ = driver.__name__
    return Limited


class WholeSends:
    """A websocket's TCP socket whose `send` writes all it is given. simple-websocket ignores
    what `send` returns; gevent's socket (unlike a blocking one) writes what fits in the send
    buffer and returns, so a frame larger than that (a fleet's `all_metrics` to a client on a
    slow link) would be cut short and the rest of the stream be garbage. The lock keeps the
    writer's frames and the reader's pongs and close from interleaving mid-frame."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, data: bytes, *flags: int) -> int:
        with self._lock:
            self._sock.sendall(data, *flags)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def request_kind(environ: dict[str, Any]) -> str:
    """What a request to the engine.io endpoint does, the way engine.io tells them apart."""
    if environ.get("REQUEST_METHOD") == "POST":
        return "post"
    upgrade = environ.get("HTTP_UPGRADE", "").lower()
    transport = parse_qs(environ.get("QUERY_STRING", "")).get("transport", [""])[0]
    return "websocket" if upgrade == "websocket" or transport == "websocket" else "poll"


def _bad_request(start_response: Callable[..., Any], message: str) -> Iterable[bytes]:
    """The refusal engine.io gives a request it will not serve: 400, a JSON string."""
    body = json.dumps(message).encode()
    start_response(
        "400 BAD REQUEST",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _refuse(
    start_response: Callable[..., Any], status: int, code: str, message: str
) -> Iterable[bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    reason = "Too Many Requests" if status == 429 else "Service Unavailable"
    start_response(
        f"{status} {reason}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Retry-After", "5"),
        ],
    )
    return [body]
