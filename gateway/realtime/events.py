"""Socket.IO (SPEC §5): the extension, its connect check and the seed events' handlers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, request
from flask_socketio import SocketIO, emit, join_room, leave_room, rooms
from socketio import RedisManager
from socketio.exceptions import ConnectionRefusedError as Refused

from gateway import blocking
from gateway.auth import MALFORMED, Principal, Role
from gateway.config import Settings
from gateway.core import views
from gateway.current import client_address, service, service_of
from gateway.errors import GatewayError, InvalidInput, NotAuthenticated, NotPermitted
from gateway.inputs import number, payload, text
from gateway.realtime.bridge import ALL_METRICS_ROOM, AUTHENTICATED_ROOM, Bridge, metrics_room
from gateway.realtime.sessions import SessionGuard
from gateway.web.http_errors import outcome_status, status_of
from shared import strict_json

logger = logging.getLogger(__name__)

REDIS_CONNECT_TIMEOUT_S = 2.0
Handler = Callable[[Principal, Any], dict[str, Any]]


def _error(exc: GatewayError, event: str | None) -> dict[str, Any]:
    body = exc.to_dict()
    body["status"] = status_of(exc)  # the HTTP status a REST call would get
    body["event"] = event
    return body


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


def role_handler(event: str, role: Role = "viewer") -> Callable[[Handler], Handler]:
    """Registers `fn` as the handler of `event`, behind a role check on every event; errors
    are answered as an `error` emit and ack."""

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


@role_handler("request_metrics")
def request_metrics(_p: Principal, data: Any) -> dict[str, Any]:
    args = payload(data, "request_metrics", required=True)
    name = text(args, "name", required=True)
    cache = service().cache
    vm = cache.find(str(name), text(args, "host"))
    body = views.vm_metrics(vm, cache.metrics_of((vm.host, vm.uuid)))
    emit("vm_metrics", body, ignore_queue=True)  # its own client is here
    return body


@role_handler("request_all_metrics")
def request_all_metrics(_p: Principal, data: Any) -> dict[str, Any]:
    payload(data, "request_all_metrics")
    body = service().reads.all_metrics()
    emit("all_metrics", body, ignore_queue=True)  # its own client is here
    return {"count": body["count"]}


@role_handler("request_vms_list")
def request_vms_list(_p: Principal, data: Any) -> dict[str, Any]:
    payload(data, "request_vms_list")
    body = service().reads.vms_list()
    emit("vms_list", body, ignore_queue=True)  # its own client is here
    return {"count": body["count"]}


@role_handler("subscribe_metrics")
def subscribe_metrics(_p: Principal, data: Any) -> dict[str, Any]:
    args = payload(data, "subscribe_metrics")
    name, host = text(args, "name") or "*", text(args, "host")
    if name == "*":
        join_room(ALL_METRICS_ROOM)
        return {"subscribed": "*"}
    vm = service().cache.find(name, host)
    join_room(metrics_room(vm.host, vm.uuid))
    return {"subscribed": vm.name, "host": vm.host, "uuid": vm.uuid}


@role_handler("unsubscribe_metrics")
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


@role_handler("vm_action", role="operator")
def vm_action(principal: Principal, data: Any) -> dict[str, Any]:
    args = payload(data, "vm_action", required=True)
    name = text(args, "name", required=True)
    action = text(args, "action", required=True)
    host = text(args, "host")
    wait = number(args, "wait")
    body = {k: v for k, v in args.items() if k in ("force", "timeout_s", "force_after")}
    outcome = service().command(str(name), host, str(action), body, principal, wait)
    return {**outcome.body, "status_code": outcome_status(outcome)}
