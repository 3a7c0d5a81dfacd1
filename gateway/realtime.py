"""Socket.IO (SPEC §5): the seed events, pushes, metric streams, and the one emit bridge."""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from typing import Any

from flask import Flask, request
from flask_socketio import SocketIO, emit, join_room, leave_room, rooms

from gateway import views
from gateway.auth import Principal, Role
from gateway.errors import Forbidden, GatewayError, Unauthorized
from gateway.jobs import Job
from gateway.service import Gateway
from shared.messages import HostStatus, MetricsBatch, VmState, as_dict

logger = logging.getLogger(__name__)

ALL_METRICS_ROOM = "metrics:*"
Outgoing = tuple[str, dict[str, Any], str | list[str] | None]
Handler = Callable[[Principal, dict[str, Any]], dict[str, Any]]


def metrics_room(host: str, uuid: str) -> str:
    return f"metrics:{host}:{uuid}"


class Bridge:
    """Turns cache and job changes into Socket.IO emits, on one thread fed by a queue, so no
    emit ever happens inside a paho callback or the ingest thread (PITFALLS 24)."""

    def __init__(self, socketio: SocketIO, gateway: Gateway) -> None:
        self.socketio = socketio
        self.gateway = gateway
        self.queue: queue.Queue[Outgoing | None] = queue.Queue(maxsize=10000)
        self.started = False

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
            for m in item.vms:
                vm = cache.vm((item.host, m.uuid))
                if vm is not None:
                    data = views.vm_metrics(vm, m)
                    self._put(
                        ("vm_metrics", data, [ALL_METRICS_ROOM, metrics_room(item.host, m.uuid)])
                    )

    def on_job(self, job: Job) -> None:
        self._put(("job_update", self.gateway.jobs.snapshot(job), None))

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            event, data, to = item
            try:
                self.socketio.emit(event, data, to=to)
            except Exception:
                logger.exception("emitting %s failed", event)


def _error(exc: GatewayError, event: str) -> dict[str, Any]:
    body = exc.to_dict()
    body["status"] = exc.status
    body["event"] = event
    return body


def init_app(app: Flask, gateway: Gateway) -> SocketIO:
    origins = gateway.settings.cors_list()
    socketio = SocketIO(
        app,
        async_mode="threading",  # PITFALLS 22: never let it pick eventlet
        cors_allowed_origins=origins or None,
        logger=False,
        engineio_logger=False,
    )
    principals: dict[str, Principal] = {}

    def who() -> Principal:
        sid: str = request.sid  # type: ignore[attr-defined]
        principal = principals.get(sid)
        if principal is None:
            raise Unauthorized("not authenticated")
        return principal

    def guarded(event: str, role: Role = "viewer") -> Callable[[Handler], Handler]:
        """Wraps a handler: role check on every event, errors as an `error` emit and ack."""

        def decorate(fn: Handler) -> Handler:
            def handler(data: Any = None) -> Any:
                try:
                    principal = who()
                    if not principal.can(role):
                        raise Forbidden(f"{event} needs the {role} role")
                    return fn(principal, data if isinstance(data, dict) else {})
                except GatewayError as exc:
                    body = _error(exc, event)
                    emit("error", body)
                    return body
                except Exception:
                    logger.exception("Socket.IO handler %s failed", event)
                    return {
                        "error": {"code": "internal", "message": "internal error"},
                        "status": 500,
                        "event": event,
                    }

            socketio.on_event(event, handler)
            return fn

        return decorate

    def connect(auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        token = token or request.args.get("token")
        principal = gateway.auth.identify(token)
        if principal is None:
            raise ConnectionRefusedError("unauthorized: a valid API token is required")
        principals[request.sid] = principal  # type: ignore[attr-defined]

    def disconnect(*_args: Any) -> None:
        principals.pop(request.sid, None)  # type: ignore[attr-defined]

    socketio.on_event("connect", connect)
    socketio.on_event("disconnect", disconnect)

    @guarded("request_metrics")
    def request_metrics(_p: Principal, data: dict[str, Any]) -> dict[str, Any]:
        vm = gateway.cache.find(str(data.get("name", "")), data.get("host") or None)
        body = views.vm_metrics(vm, gateway.cache.metrics_of((vm.host, vm.uuid)))
        emit("vm_metrics", body)
        return body

    @guarded("request_all_metrics")
    def request_all_metrics(_p: Principal, _d: dict[str, Any]) -> dict[str, Any]:
        body = views.all_metrics(gateway.cache.snapshot(with_metrics=True))
        emit("all_metrics", body)
        return {"count": body["count"]}

    @guarded("request_vms_list")
    def request_vms_list(_p: Principal, _d: dict[str, Any]) -> dict[str, Any]:
        body = views.vms_list(gateway.cache.snapshot())
        emit("vms_list", body)
        return {"count": body["count"]}

    @guarded("subscribe_metrics")
    def subscribe_metrics(_p: Principal, data: dict[str, Any]) -> dict[str, Any]:
        name = str(data.get("name") or "*")
        if name == "*":
            join_room(ALL_METRICS_ROOM)
            return {"subscribed": "*"}
        vm = gateway.cache.find(name, data.get("host") or None)
        join_room(metrics_room(vm.host, vm.uuid))
        return {"subscribed": vm.name, "host": vm.host, "uuid": vm.uuid}

    @guarded("unsubscribe_metrics")
    def unsubscribe_metrics(_p: Principal, data: dict[str, Any]) -> dict[str, Any]:
        name = data.get("name")
        if name and name != "*":
            vm = gateway.cache.find(str(name), data.get("host") or None)
            leave_room(metrics_room(vm.host, vm.uuid))
        else:
            for room in rooms():
                if room.startswith("metrics:"):
                    leave_room(room)
        return {"unsubscribed": name or "*"}

    @guarded("vm_action", role="operator")
    def vm_action(principal: Principal, data: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in data.items() if k in ("force", "timeout_s", "force_after")}
        outcome = gateway.command(
            str(data.get("name", "")),
            data.get("host") or None,
            str(data.get("action", "")),
            body,
            principal,
            data.get("wait"),
        )
        return {**outcome.body, "status_code": outcome.status}

    bridge = Bridge(socketio, gateway)
    app.extensions["kvmsup_bridge"] = bridge
    bridge.start()
    return socketio
