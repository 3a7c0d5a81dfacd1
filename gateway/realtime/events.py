"""Socket.IO (SPEC §5): the seed events, pushes, metric streams, and the one emit bridge."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, request
from flask_socketio import SocketIO, emit, join_room, leave_room, rooms
from socketio import RedisManager
from socketio.exceptions import ConnectionRefusedError as Refused

from gateway import blocking
from gateway.auth import MALFORMED, Principal, Role, client_address
from gateway.config import Settings
from gateway.core import views
from gateway.core.job import from_set
from gateway.core.jobs import Job
from gateway.current import service, service_of
from gateway.errors import GatewayError, InvalidInput, NotAuthenticated, NotPermitted
from gateway.realtime.sessions import SessionGuard
from gateway.service import Gateway
from gateway.web.http_errors import outcome_status, status_of
from shared import strict_json
from shared.messages import HostStatus, MetricsBatch, VmState, as_dict

logger = logging.getLogger(__name__)

ALL_METRICS_ROOM = "metrics:*"
METRICS_BACKLOG = 50  # metrics batches waiting to be emitted; past it a tick's stream is skipped
# Pushes go to this room, which only a session that passed the connect handler joins: a
# broadcast to the namespace would also reach sessions still in (or stuck in) their connect.
AUTHENTICATED_ROOM = "authenticated"
MAX_TEXT = 1024  # longest name, host or action accepted in an event; an error quotes it
# With a message queue (KVMSUP_SIO_MESSAGE_QUEUE) only these pushes go through it, to the
# clients of every gateway: a job's steps are known as they happen only to the gateway that
# sent it. Every gateway derives the others (states, statuses, metrics, and the outcomes of
# jobs it did not send) from its own MQTT subscriptions, so they stay local, or each client
# would get one copy per gateway.
QUEUED_EVENTS = frozenset({"job_update"})
REDIS_CONNECT_TIMEOUT_S = 2.0
Outgoing = tuple[str, dict[str, Any], str | list[str] | None]
Handler = Callable[[Principal, Any], dict[str, Any]]


def metrics_room(host: str, uuid: str) -> str:
    return f"metrics:{host}:{uuid}"


class Bridge:
    """Turns cache and job changes into Socket.IO emits, on one thread (a greenlet under gevent)
    fed by a queue, so no emit ever happens inside a paho callback or the ingest thread (an
    emit can block on a slow client, and a blocked paho thread stops every MQTT delivery)."""

    def __init__(self, socketio: SocketIO, gateway: Gateway) -> None:
        self.socketio = socketio
        self.gateway = gateway
        self.queue: queue.Queue[Outgoing | None] = queue.Queue(maxsize=10000)
        self.started = False
        self.cooperative = socketio.async_mode == "gevent"
        # Metrics batches waiting in the queue: each holds a whole host's tick, so far fewer
        # of them may wait than single events.
        self._batches = 0
        self._batches_lock = threading.Lock()
        self._next_warning = 0.0

    def start(self) -> None:
        if not self.started:
            self.started = True
            self.gateway.cache.listen(self.on_change)
            self.gateway.jobs.listen(self.on_job)
            self.socketio.start_background_task(self._run)

    def stop(self) -> None:
        self.queue.put(None)

    def _put(self, item: Outgoing) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            logger.warning("Socket.IO bridge queue full: dropped %s", item[0])

    def on_change(self, kind: str, item: object) -> None:
        cache = self.gateway.cache
        if kind == "vm_state" and isinstance(item, VmState):
            self._put(("vm_state", views.vm_detail(item, cache.is_online(item.host)), None))
        elif kind == "vm_removed" and isinstance(item, VmState):
            gone = {**views.vm_summary(item, cache.is_online(item.host)), "removed": True}
            self._put(("vm_removed", gone, None))
        elif kind == "host_status" and isinstance(item, HostStatus):
            data = as_dict(item)
            data.pop("v", None)
            self._put(("host_status", data, None))
        elif kind == "metrics" and isinstance(item, MetricsBatch):
            # The whole batch as one item, and only when someone listens to a stream of its
            # VMs: the ingest must not pay per VM for streams nobody subscribed to.
            if not self._listened(item):
                return
            with self._batches_lock:
                behind = self._batches >= METRICS_BACKLOG
                if not behind:
                    self._batches += 1
            if not behind:
                try:
                    self.queue.put_nowait(("metrics", {"batch": item}, None))
                    return
                except queue.Full:
                    with self._batches_lock:
                        self._batches -= 1
            now = time.monotonic()
            if now >= self._next_warning:  # one line per 10 s: a tick brings one per host
                self._next_warning = now + 10.0
                logger.warning("Socket.IO bridge behind: metrics streams of a tick skipped")

    def _listened(self, batch: MetricsBatch) -> bool:
        rooms = self.socketio.server.manager.rooms.get("/", {})
        if rooms.get(ALL_METRICS_ROOM):
            return True
        host = batch.host
        if len(rooms) < len(batch.vms):  # few sessions: look at their rooms, not every VM's
            prefix = metrics_room(host, "")
            # A copy taken in one step: sessions join and leave rooms on other threads. The
            # manager also keeps every session in a room named None (its own "everyone").
            snapshot = tuple(rooms.items())
            return any(
                isinstance(room, str) and room.startswith(prefix) and members
                for room, members in snapshot
            )
        return any(rooms.get(metrics_room(host, m.uuid)) for m in batch.vms)

    def on_job(self, job: Job) -> None:
        if job.foreign and self.gateway.settings.sio_message_queue and not from_set(job):
            return  # the gateway that sent it pushed each of its steps through the queue
        self._put(("job_update", self.gateway.jobs.snapshot(job), None))

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            event, data, to = item
            try:
                if event == "metrics":
                    with self._batches_lock:
                        self._batches -= 1
                    self._emit_metrics(data["batch"])
                else:
                    self.socketio.emit(
                        event,
                        data,
                        to=to or AUTHENTICATED_ROOM,
                        ignore_queue=event not in QUEUED_EVENTS or bool(data.get("foreign")),
                    )
            except Exception:
                logger.exception("emitting %s failed", event)
            if self.cooperative:
                # A backlog of emits would otherwise run back to back without giving REST and
                # the websockets' own greenlets a turn (queue.get does not yield when not empty).
                self.socketio.sleep(0)

    def _emit_metrics(self, batch: MetricsBatch) -> None:
        """`vm_metrics` of each VM someone subscribed to (one VM, or `*`), none otherwise."""
        rooms = self.socketio.server.manager.rooms.get("/", {})
        everyone = bool(rooms.get(ALL_METRICS_ROOM))
        cache = self.gateway.cache
        for m in batch.vms:
            room = metrics_room(batch.host, m.uuid)
            if not everyone and not rooms.get(room):
                continue
            vm = cache.vm((batch.host, m.uuid))
            if vm is not None:
                # Every gateway has the metrics from its own subscription: never through a queue.
                self.socketio.emit(
                    "vm_metrics",
                    views.vm_metrics(vm, m),
                    to=[ALL_METRICS_ROOM, room],
                    ignore_queue=True,
                )


def _error(exc: GatewayError, event: str | None) -> dict[str, Any]:
    body = exc.to_dict()
    body["status"] = status_of(exc)  # the HTTP status a REST call would get
    body["event"] = event
    return body


def payload(data: Any, event: str, *, required: bool = False) -> dict[str, Any]:
    """An event's payload: a JSON object (absent is `{}` unless `required`)."""
    if data is None and not required:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{event} takes a JSON object")
    return data


def text(data: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    """A string field: absent (or empty, for an optional one) is None; anything that is not a
    string of sane length and valid UTF-8 is a 400, never a crash further down."""
    value = data.get(key)
    if value is None or (value == "" and not required):
        if required:
            raise InvalidInput(f"{key} is required")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{key} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{key} is longer than {MAX_TEXT} characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidInput(f"{key} is not valid UTF-8 text") from None
    return value


def number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{key} must be a number")
    return float(value)


# The extension, created once and bound to an app by `init_app`. Its handlers below are
# registered at import and attached to the server each `init_app` makes. One app per process
# serves Socket.IO: Flask-SocketIO keeps the server of the app it was bound to last.
socketio = SocketIO()
PRINCIPALS = "kvmsup_principals"  # app.extensions entry: Socket.IO sid → its Principal
SESSIONS = "kvmsup_sessions"  # app.extensions entry: the SessionGuard
BRIDGE = "kvmsup_bridge"  # app.extensions entry: the Bridge, once `start` made it


def init_app(app: Flask, settings: Settings) -> SocketIO:
    """Bind the Socket.IO server to `app`, behind its session guard. Starts nothing."""
    origins = settings.cors_list()
    manager: RedisManager | None = None
    if settings.sio_message_queue:
        manager = RedisManager(
            settings.sio_message_queue,
            # One channel per topic prefix: deployments sharing a Redis stay apart.
            channel=f"{settings.topic_prefix}-socketio",
            # The bridge publishes job updates to Redis itself: a Redis host that does not
            # answer holds every push behind it, so a connection attempt is cut short.
            redis_options={"socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S},
        )
    socketio.init_app(
        app,
        # gevent under gunicorn's gevent worker (the process is patched, every thread is a
        # greenlet); real threads under Werkzeug (--dev) and the test client. Never left to
        # auto-detection, which would pick eventlet if it happened to be installed.
        async_mode="gevent" if blocking.under_gevent() else "threading",
        cors_allowed_origins=origins or None,
        json=strict_json,  # never NaN or Infinity on the wire: clients drop the connection
        logger=False,
        engineio_logger=False,
        # Always given: the extension keeps the options of an earlier `init_app`.
        client_manager=manager,
    )
    guard = SessionGuard(
        socketio.server,
        auth_timeout=settings.sio_auth_timeout,
        per_client=settings.max_sockets_per_client,
        total=settings.socket_limit(),
        v6_prefix=settings.ipv6_prefix,
    )
    guard.install(app)
    app.extensions[SESSIONS] = guard
    app.extensions[PRINCIPALS] = {}
    return socketio


def start(app: Flask) -> Bridge:
    """Start the emit bridge and the session reaper of `app` (the server entry point does)."""
    bridge: Bridge | None = app.extensions.get(BRIDGE)
    if bridge is None:
        bridge = app.extensions[BRIDGE] = Bridge(socketio, service_of(app))
    bridge.start()
    guard_of(app).start()
    return bridge


def guard_of(app: Flask) -> SessionGuard:
    guard: SessionGuard = app.extensions[SESSIONS]
    return guard


def _principals() -> dict[str, Principal]:
    principals: dict[str, Principal] = current_app.extensions[PRINCIPALS]
    return principals


def who() -> Principal:
    sid: str = request.sid  # type: ignore[attr-defined]
    principal = _principals().get(sid)
    if principal is None:
        raise NotAuthenticated("not authenticated")
    return principal


def answer(exc: GatewayError, event: str) -> dict[str, Any]:
    body = _error(exc, event)
    emit("error", body, ignore_queue=True)  # its own client is here
    return body


def guarded(event: str, role: Role = "viewer") -> Callable[[Handler], Handler]:
    """Registers a handler: role check on every event, errors as an `error` emit and ack."""

    def decorate(fn: Handler) -> Handler:
        def handler(data: Any = None, *_extra: Any) -> Any:
            try:
                principal = who()
                if not principal.can(role):
                    raise NotPermitted(f"{event} needs the {role} role")
                return fn(principal, data)
            except GatewayError as exc:
                return answer(exc, event)
            except Exception:
                logger.exception("Socket.IO handler %s failed", event)
                return answer(GatewayError("internal error"), event)

        socketio.on_event(event, handler)
        return fn

    return decorate


def unknown(event: Any, *_args: Any) -> Any:
    name = str(event)[:64]
    try:
        who()
        raise InvalidInput(f"unknown event {name!r}")
    except GatewayError as exc:
        return answer(exc, name)


def connect(auth: Any = None) -> None:
    sid: str = request.sid  # type: ignore[attr-defined]
    eio_sid = socketio.server.manager.eio_sid_from_sid(sid, "/")
    secret: object = None
    if isinstance(auth, dict):
        secret = auth.get("token")
    elif auth is not None:
        secret = MALFORMED  # `auth` must be {"token": …}
    if secret is None:
        secret = request.args.get("token")  # the handshake's query, kept for the seed
    try:
        principal = service().auth.authenticate(secret, client_address(), "socketio")
    except GatewayError as exc:
        # python-socketio answers CONNECT_ERROR with this; the guard then closes the
        # transport. Any other exception here would leave the session half-connected.
        detail = {"code": exc.code, "status": status_of(exc), **exc.extra}
        raise Refused(f"{exc.code}: {exc.message}", detail) from None
    _principals()[sid] = principal
    join_room(AUTHENTICATED_ROOM)
    guard_of(current_app).authenticated(eio_sid)


def disconnect(*_args: Any) -> None:
    _principals().pop(request.sid, None)  # type: ignore[attr-defined]


socketio.on_event("connect", connect)
socketio.on_event("disconnect", disconnect)
socketio.on_event("*", unknown)


@guarded("request_metrics")
def request_metrics(_p: Principal, data: Any) -> dict[str, Any]:
    args = payload(data, "request_metrics", required=True)
    name = text(args, "name", required=True)
    cache = service().cache
    vm = cache.find(str(name), text(args, "host"))
    body = views.vm_metrics(vm, cache.metrics_of((vm.host, vm.uuid)))
    emit("vm_metrics", body, ignore_queue=True)  # its own client is here
    return body


@guarded("request_all_metrics")
def request_all_metrics(_p: Principal, data: Any) -> dict[str, Any]:
    payload(data, "request_all_metrics")
    body = service().reads.all_metrics()
    emit("all_metrics", body, ignore_queue=True)  # its own client is here
    return {"count": body["count"]}


@guarded("request_vms_list")
def request_vms_list(_p: Principal, data: Any) -> dict[str, Any]:
    payload(data, "request_vms_list")
    body = service().reads.vms_list()
    emit("vms_list", body, ignore_queue=True)  # its own client is here
    return {"count": body["count"]}


@guarded("subscribe_metrics")
def subscribe_metrics(_p: Principal, data: Any) -> dict[str, Any]:
    args = payload(data, "subscribe_metrics")
    name, host = text(args, "name") or "*", text(args, "host")
    if name == "*":
        join_room(ALL_METRICS_ROOM)
        return {"subscribed": "*"}
    vm = service().cache.find(name, host)
    join_room(metrics_room(vm.host, vm.uuid))
    return {"subscribed": vm.name, "host": vm.host, "uuid": vm.uuid}


@guarded("unsubscribe_metrics")
def unsubscribe_metrics(_p: Principal, data: Any) -> dict[str, Any]:
    args = payload(data, "unsubscribe_metrics")
    name, host = text(args, "name"), text(args, "host")
    if name and name != "*":
        vm = service().cache.find(name, host)
        leave_room(metrics_room(vm.host, vm.uuid))
    else:
        for room in rooms():
            if room.startswith("metrics:"):
                leave_room(room)
    return {"unsubscribed": name or "*"}


@guarded("vm_action", role="operator")
def vm_action(principal: Principal, data: Any) -> dict[str, Any]:
    args = payload(data, "vm_action", required=True)
    name = text(args, "name", required=True)
    action = text(args, "action", required=True)
    host = text(args, "host")
    wait = number(args, "wait")
    body = {k: v for k, v in args.items() if k in ("force", "timeout_s", "force_after")}
    outcome = service().command(str(name), host, str(action), body, principal, wait)
    return {**outcome.body, "status_code": outcome_status(outcome)}
