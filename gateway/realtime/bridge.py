"""The emit bridge: cache and job changes become Socket.IO pushes, on a thread of their own."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from flask_socketio import SocketIO

from gateway.core import views
from gateway.core.job import Job, from_set
from gateway.service import Gateway
from shared.guest import GuestInfo
from shared.messages import HostStatus, MetricsBatch, VmSnapshots, VmState, as_dict

logger = logging.getLogger(__name__)

ALL_METRICS_ROOM = "metrics:*"
METRICS_BACKLOG = 50  # metrics batches waiting to be emitted; past it a tick's stream is skipped
# Pushes go to this room, which only a session that passed the connect handler joins: a
# broadcast to the namespace would also reach sessions still in (or stuck in) their connect.
AUTHENTICATED_ROOM = "authenticated"
# With a message queue (KVMSUP_SIO_MESSAGE_QUEUE) only these pushes go through it, to the
# clients of every gateway: a job's steps are known as they happen only to the gateway that
# sent it. Every gateway derives the others (states, statuses, metrics, and the outcomes of
# jobs it did not send) from its own MQTT subscriptions, so they stay local, or each client
# would get one copy per gateway.
QUEUED_EVENTS = frozenset({"job_update"})
Outgoing = tuple[str, dict[str, Any], str | list[str] | None]


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
        elif kind == "vm_snapshots" and isinstance(item, VmSnapshots):
            data = as_dict(item)
            data.pop("v", None)
            self._put(("vm_snapshots", data, None))
        elif kind == "vm_guest" and isinstance(item, GuestInfo):
            self._put(("vm_guest", views.guest_detail(item, item), None))
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
