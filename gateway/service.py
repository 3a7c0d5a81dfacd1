"""Wiring of one gateway: settings, cache, jobs, bus, auth; and the command path REST and
Socket.IO share."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from typing import Any

from gateway.adapters.bus import Bus, Inbound, VmRemoved
from gateway.adapters.store import Store
from gateway.auth import Authenticator, Principal
from gateway.config import Settings
from gateway.core.drops import Drops
from gateway.core.ingest import GuestCleared, SnapshotsCleared
from gateway.core.jobs import Job, JobManager
from gateway.core.readviews import ReadViews
from gateway.core.records import audit_of, job_of, refusal
from gateway.core.state import HostFull, StateCache
from gateway.errors import Conflict, GatewayError, InvalidInput, Unavailable
from gateway.inputs import command_of, parse_wait, snapshot_command_of
from shared.guest import GuestInfo
from shared.messages import (
    ActionParams,
    CommandReply,
    GatewayStatus,
    HostStatus,
    MetricsBatch,
    VmEvent,
    VmSnapshots,
    VmState,
    utc_now,
)

logger = logging.getLogger(__name__)

# The ingest of a large fleet makes and drops a great many small objects (every VM's metrics,
# each tick), none of them in a reference cycle: reference counting frees them all. At the
# interpreter's default thresholds the cycle collector would still run every few hundred
# allocations, its full passes walking the whole cache for nothing. Collect far less often;
# cyclic garbage, rare here, waits a little longer.
GC_THRESHOLD = (50_000, 10, 10)


def tune_gc() -> None:
    """Move what start-up made (modules, the app) out of the collector's way, and collect
    less often. Process-wide: the gateway process is this gateway."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


@dataclass(frozen=True)
class Outcome:
    """A command's answer: whether its job finished within the wait, and the body REST and the
    Socket.IO ack send (the web layer picks the status code)."""

    finished: bool
    body: dict[str, Any]
    job_id: str


class Gateway:
    """Owns the long-lived parts; `start()` connects, `stop()` says goodbye on MQTT."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Authenticator.from_settings(settings)
        self.cache = StateCache(settings.max_vms_per_host)
        self.reads = ReadViews(self.cache)
        self.drops = Drops()
        self.store = Store(
            settings.db,
            settings.history_minutes,
            settings.audit_days,
            drops=self.drops,
            minute_hours=settings.history_1m_hours,
            quarter_days=settings.history_15m_days,
        )
        self.bus = Bus(settings, self.handle, drops=self.drops)
        self.jobs = JobManager(
            self.bus.send_command,
            settings.accept_timeout,
            settings.jobs_keep,
            persist=lambda job: self.store.record_now(audit_of(job)),
        )
        self.jobs.listen(self._audit)
        self._started = False
        # Metrics batches, and the VM metrics in them, that reached the cache (ingest only).
        self.applied = {"batches": 0, "vm_metrics": 0}

    def _audit(self, job: Job) -> None:
        # The audit is what this gateway handled; a job another gateway sent is in that
        # gateway's audit, and its outcome in every gateway's events (GET /events).
        if not job.foreign:
            self.store.record(audit_of(job))

    def start(self) -> None:
        if not self._started:
            self._started = True
            tune_gc()
            self.store.start()
            # Before the bus: replies the broker kept for this gateway find their jobs.
            self.jobs.restore([job_of(e) for e in self.store.jobs(self.settings.jobs_keep)])
            self.jobs.start()
            self.bus.start()

    def stop(self) -> None:
        if self._started:
            self.jobs.stop()
            # The bus stops paho's loop, then waits for the ingest thread to apply what it
            # had: only then is every record it made queued ahead of the writer's stop marker.
            self.bus.stop()
            self.store.stop()

    def handle(self, model: Inbound) -> None:
        """Every decoded MQTT message, on the ingest thread."""
        if isinstance(model, VmState):
            try:
                self.cache.apply_vm_state(model)
            except HostFull as exc:
                topic = self.bus.topics.vm_state(model.host, model.uuid)
                self.drops.drop("too_many_vms", topic, str(exc))
        elif isinstance(model, MetricsBatch):
            self.apply_metrics(model)
        elif isinstance(model, HostStatus):
            self.cache.apply_host_status(model)
            if not model.online:
                self.jobs.host_offline(model.host)
        elif isinstance(model, VmRemoved):
            if self.cache.remove_vm(model.host, model.uuid) is None:
                topic = self.bus.topics.vm_state(model.host, model.uuid)
                self.drops.drop("unknown_vm", topic, "an empty state for a VM the gateway lacks")
        elif isinstance(model, CommandReply):
            drop = self.jobs.on_reply(model)
            if drop is not None:
                topic = self.bus.topics.reply(model.host, self.settings.gateway_id)
                self.drops.drop(drop.reason, topic, drop.detail)
            else:
                # Only a reply its job accepted may show its state (read-your-writes).
                self.cache.apply_command_result(model)
        elif isinstance(model, VmEvent):
            if model.ts.timestamp() > time.time():
                # The agent's clock is ahead, or the event is forged: events are kept and
                # pruned by their time, and one from the future would never be pruned.
                model = model.model_copy(update={"ts": utc_now()})
            self.store.add_event(model)
            drop = self.jobs.on_event(model)
            if drop is not None:
                topic = self.bus.topics.host_events(model.host)
                self.drops.drop(drop.reason, topic, drop.detail)
        elif isinstance(model, GatewayStatus):
            self.cache.apply_gateway_status(model)
        elif isinstance(model, VmSnapshots) and not self.cache.apply_vm_snapshots(model):
            topic = self.bus.topics.vm_snapshots(model.host, model.uuid)
            self.drops.drop("unknown_vm", topic, "snapshots of a VM the gateway lacks, or older")
        elif isinstance(model, SnapshotsCleared):
            self.cache.clear_snapshots((model.host, model.uuid))
        elif isinstance(model, GuestInfo):
            if not self.cache.apply_guest(model):
                topic = self.bus.topics.vm_guest(model.host, model.uuid)
                self.drops.drop("unknown_vm", topic, "guest data of a VM the gateway lacks")
        elif isinstance(model, GuestCleared):
            self.cache.clear_guest(model.host, model.uuid)

    def apply_metrics(self, batch: MetricsBatch) -> None:
        kept, dropped = self.cache.apply_metrics(batch)
        if dropped:
            topic = self.bus.topics.host_metrics(batch.host)
            # One count (and at most one log line) per reason for the whole batch.
            by_reason: dict[str, tuple[str, int]] = {}
            for reason, detail in dropped:
                first, n = by_reason.get(reason, (detail, 0))
                by_reason[reason] = (first, n + 1)
            for reason, (detail, n) in by_reason.items():
                more = f" (and {n - 1} more entries of this batch)" if n > 1 else ""
                self.drops.drop(reason, topic, detail + more, count=n)
        if kept is None:
            return
        self.applied["batches"] += 1
        self.applied["vm_metrics"] += len(kept.vms)
        # Late: taken more than two of its host's intervals ago. The agent's clock is the
        # reference, so a broker backlog counts as much as the gateway's own queue.
        age = time.time() - kept.ts.timestamp()
        if age > 2 * kept.interval_s:
            self.drops.late(
                self.bus.topics.host_metrics(kept.host), len(kept.vms), age, kept.interval_s
            )
        self.store.add_metrics(kept)

    def command(
        self, ref: str, host: str | None, verb: str, body: Any, who: Principal, wait: Any = None
    ) -> Outcome:
        """Resolve, check reachability, publish, wait: finished, still running, or a
        GatewayError. Every command lands in the audit: as its job, or as a refusal when no
        job was made."""
        try:
            return self._command(ref, host, verb, body, who, wait)
        except GatewayError as exc:
            # An agent timeout carries its (audited) job: that is in the audit already.
            if not isinstance(exc.extra.get("job"), dict):
                self.store.record(refusal(ref, host, verb, who.name, exc))
            raise

    def _command(
        self, ref: str, host: str | None, verb: str, body: Any, who: Principal, wait: Any
    ) -> Outcome:
        action, params = command_of(verb, body)
        wait_s = parse_wait(wait, self.settings.default_wait, self.settings.max_wait)
        return self._send(self.cache.find(ref, host), action, params, who, wait_s)

    def snapshot_command(
        self,
        ref: str,
        host: str | None,
        action: str,
        snapshot: str | None,
        body: Any,
        who: Principal,
        wait: Any = None,
    ) -> Outcome:
        """A snapshot action as a job, like `command`. A revert or a delete destroys state: its
        body must name the VM in `confirm`, so that no replayed or mistaken request does it."""
        try:
            params = snapshot_command_of(action, snapshot, body)
            wait_s = parse_wait(wait, self.settings.default_wait, self.settings.max_wait)
            vm = self.cache.find(ref, host)
            if action != "snapshot_create":
                self._confirmed(action, vm, (body or {}).get("confirm"))
            return self._send(vm, action, params, who, wait_s)
        except GatewayError as exc:
            if not isinstance(exc.extra.get("job"), dict):
                self.store.record(refusal(ref, host, action, who.name, exc))
            raise

    @staticmethod
    def _confirmed(action: str, vm: VmState, confirm: Any) -> None:
        """A revert or a delete names its VM: without it the request is malformed (400); a
        name that is not this VM's is a confirmation meant for another one (409)."""
        if confirm is None:
            raise InvalidInput(
                f"{action} of {vm.name!r} needs the body field confirm set to the VM's name",
                code="confirmation_required",
            )
        if confirm != vm.name:
            raise Conflict(
                f"confirm does not name this VM: {action} needs confirm = {vm.name!r}",
                code="confirmation_mismatch",
            )

    def _send(
        self, vm: VmState, action: str, params: ActionParams, who: Principal, wait_s: float
    ) -> Outcome:
        if not self.bus.connected:
            raise Unavailable(
                "the gateway is not connected to the MQTT broker", code="broker_unreachable"
            )
        if not self.cache.is_online(vm.host):
            raise Unavailable(f"host {vm.host} is offline", code="host_offline")
        job = self.jobs.submit(vm.host, vm.uuid, vm.name, action, params, who.name)
        finished = self.jobs.run(job, wait_s)
        body_out = self.jobs.snapshot(job)
        if finished:
            body_out["success"] = job.status == "succeeded"
            body_out["message"] = f"{action} {vm.name} on {vm.host}: {job.status}"
            return Outcome(True, body_out, job.id)
        body_out["message"] = f"{action} {vm.name} on {vm.host}: {job.status}, see /jobs/{job.id}"
        return Outcome(False, body_out, job.id)
