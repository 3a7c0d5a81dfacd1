"""Wiring of one gateway: settings, cache, jobs, bus, auth; and the command path REST and
Socket.IO share."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gateway.auth import Authenticator, Principal
from gateway.bus import Bus, Inbound, VmRemoved
from gateway.config import Settings
from gateway.errors import BadRequest, Unavailable
from gateway.jobs import JobManager
from gateway.state import StateCache
from shared.messages import (
    CommandParams,
    CommandReply,
    GatewayStatus,
    HostStatus,
    MetricsBatch,
    VmEvent,
    VmState,
)

logger = logging.getLogger(__name__)

# Seed route verb → (action, action when {"force": true}).
VERBS: dict[str, tuple[str, str]] = {
    "start": ("start", "start"),
    "stop": ("shutdown", "destroy"),
    "restart": ("reboot", "reset"),
    "suspend": ("suspend", "suspend"),
    "resume": ("resume", "resume"),
}


def command_of(verb: str, body: Any) -> tuple[str, CommandParams]:
    """The agent action and params a seed-style verb and optional JSON body ask for."""
    if verb not in VERBS:
        raise BadRequest(f"unknown action {verb!r}; expected one of {', '.join(VERBS)}")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise BadRequest("force must be true or false")
    action = VERBS[verb][1] if force else VERBS[verb][0]
    raw = {k: body[k] for k in ("timeout_s", "force_after") if k in body}
    if raw and action != "shutdown":
        raise BadRequest("timeout_s and force_after apply to a graceful stop only")
    try:
        params = CommandParams.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadRequest(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
    return action, params


def parse_wait(value: Any, default: float, cap: float) -> float:
    if value is None or value == "":
        return default
    try:
        wait = float(value)
    except (TypeError, ValueError) as exc:
        raise BadRequest("wait must be a number of seconds") from exc
    if not 0 <= wait <= cap:
        raise BadRequest(f"wait must be between 0 and {cap:g} seconds")
    return wait


@dataclass(frozen=True)
class Outcome:
    """A command's answer: HTTP status and body (REST), the same as a Socket.IO ack."""

    status: int
    body: dict[str, Any]
    job_id: str


class Gateway:
    """Owns the long-lived parts; `start()` connects, `stop()` says goodbye on MQTT."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Authenticator.from_settings(settings)
        self.cache = StateCache(settings.history_minutes, settings.events_keep)
        self.bus = Bus(settings, self.handle)
        self.jobs = JobManager(self.bus.send_command, settings.accept_timeout,
                               settings.jobs_keep)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.jobs.start()
            self.bus.start()

    def stop(self) -> None:
        if self._started:
            self.jobs.stop()
            self.bus.stop()

    def handle(self, model: Inbound) -> None:
        """Every decoded MQTT message, on the ingest thread."""
        if isinstance(model, VmState):
            self.cache.apply_vm_state(model)
        elif isinstance(model, MetricsBatch):
            self.cache.apply_metrics(model)
        elif isinstance(model, HostStatus):
            self.cache.apply_host_status(model)
            if not model.online:
                self.jobs.host_offline(model.host)
        elif isinstance(model, VmRemoved):
            self.cache.remove_vm(model.host, model.uuid)
        elif isinstance(model, CommandReply):
            self.jobs.on_reply(model)
        elif isinstance(model, VmEvent):
            self.cache.add_event(model)
        elif isinstance(model, GatewayStatus):
            self.cache.apply_gateway_status(model)

    def command(self, ref: str, host: str | None, verb: str, body: Any, who: Principal,
                wait: Any = None) -> Outcome:
        """Resolve, check reachability, publish, wait: 200, 202, or a GatewayError."""
        action, params = command_of(verb, body)
        wait_s = parse_wait(wait, self.settings.default_wait, self.settings.max_wait)
        vm = self.cache.find(ref, host)
        if not self.bus.connected:
            raise Unavailable("the gateway is not connected to the MQTT broker",
                              code="broker_unreachable")
        if not self.cache.is_online(vm.host):
            raise Unavailable(f"host {vm.host} is offline", code="host_offline")
        job = self.jobs.submit(vm.host, vm.uuid, vm.name, action, params, who.name)
        finished = self.jobs.run(job, wait_s)
        body_out = self.jobs.snapshot(job)
        if finished:
            body_out["success"] = job.status == "succeeded"
            body_out["message"] = f"{action} {vm.name} on {vm.host}: {job.status}"
            return Outcome(200, body_out, job.id)
        body_out["message"] = f"{action} {vm.name} on {vm.host}: {job.status}, see /jobs/{job.id}"
        return Outcome(202, body_out, job.id)
