"""The metrics tick: one bulk sample under a deadline, missed events reconciled, metrics published.

A hung libvirtd must not stall the tick: sampling runs in its own worker, and a tick whose
sample does not come back in time reports every VM stale instead of waiting: one hung VM must
never stall every VM's figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future

from agent import domstate
from agent.config import AgentSettings
from agent.errors import AgentError
from agent.hypervisor import Hypervisor
from agent.hypervisor.bulkstats import RawSample
from agent.hypervisor.callpool import DaemonPool
from agent.inventory import Inventory
from agent.publisher import Publisher
from agent.tick.sampler import NodeReading, Sampler
from shared.messages import MetricsBatch, VmState

logger = logging.getLogger(__name__)

# Asks the event worker to re-read one VM (uuid, name if known) and publish it if it changed.
Refresh = Callable[[str, str | None], None]


class Ticker:
    def __init__(
        self,
        settings: AgentSettings,
        hypervisor: Hypervisor,
        inventory: Inventory,
        sampler: Sampler,
        publisher: Publisher,
        refresh: Refresh,
    ) -> None:
        self.settings = settings
        self.host = settings.host_id
        self.hypervisor = hypervisor
        self.inventory = inventory
        self.sampler = sampler
        self.publisher = publisher
        self.topics = publisher.topics
        self._refresh = refresh
        self._sampling = DaemonPool(1, "sampler")  # a sample stuck on libvirtd never holds exit
        self._pending_sample: Future[tuple[list[RawSample], NodeReading]] | None = None
        self.tick = 0

    def shutdown(self) -> None:
        self._sampling.shutdown(wait=False, cancel_futures=True)

    def run_tick(self) -> MetricsBatch | None:
        """Samples every VM with one bulk call and publishes the batch (one per tick)."""
        if not (self.hypervisor.connected and self.inventory.synced):
            return None
        read = self._sample_with_deadline()
        if read is None:
            return None
        samples, reading = read
        self.tick += 1
        self._reconcile(samples)
        known = {s.uuid: s for s in self.inventory.all()}
        vms = self.sampler.vm_metrics(samples, known)
        batch = MetricsBatch(
            host=self.host,
            interval_s=self.settings.metrics_interval,
            tick=self.tick,
            host_metrics=self.sampler.host_metrics(vms, list(known.values()), reading),
            vms=vms,
        )
        self.publisher.publish("host_metrics", self.topics.host_metrics(self.host), batch)
        if self.tick % self.settings.vm_metrics_every == 0:
            for vm in vms:
                self.publisher.publish("vm_metrics", self.topics.vm_metrics(self.host, vm.uuid), vm)
        return batch

    def _read_hypervisor(self) -> tuple[list[RawSample], NodeReading]:
        """Every libvirt call of a tick, so all of them run under the tick's deadline."""
        samples = self.hypervisor.sample()
        return samples, self._node_reading(
            self.hypervisor.node_free_memory_mb(), self.hypervisor.node_cpu_stats()
        )

    def _node_reading(self, free_mb: int | None, cpu_stats: dict[str, int] | None) -> NodeReading:
        node = self.publisher.node
        return NodeReading(
            cpus=node.cpus if node else None,
            memory_total_mb=node.memory_mb if node else None,
            memory_free_mb=free_mb,
            cpu_stats=cpu_stats,
        )

    def _sample_with_deadline(self) -> tuple[list[RawSample], NodeReading] | None:
        """A hung libvirtd must not stall the tick: wait one interval, then report stale."""
        if self._pending_sample is None or self._pending_sample.done():
            self._pending_sample = self._sampling.submit(self._read_hypervisor)
        try:
            return self._pending_sample.result(timeout=max(1.0, self.settings.metrics_interval))
        except TimeoutError:
            logger.warning("libvirt stats did not come back within the tick: VMs reported stale")
            now = time.monotonic_ns()
            return [
                RawSample(
                    uuid=s.uuid,
                    name=s.name,
                    state=_state_code(s.state),
                    reason=0,
                    taken_ns=now,
                    stale=True,
                )
                for s in self.inventory.all()
            ], self._node_reading(None, None)
        except AgentError as exc:
            logger.warning("sampling failed: %s", exc)
            return None

    def _reconcile(self, samples: list[RawSample]) -> None:
        """A missed lifecycle event still shows in the next tick: queue a refresh for it."""
        seen = set()
        for raw in samples:
            seen.add(raw.uuid)
            known = self.inventory.get(raw.uuid)
            if raw.stale:
                continue
            if known is None or _differs(known, raw):
                self._refresh(raw.uuid, raw.name)
        for uuid in self.inventory.uuids() - seen:
            self._refresh(uuid, None)


def next_deadline(previous: float, interval: float, now: float) -> tuple[float, float]:
    """The tick clock: (the next tick's time, how long to wait for it) once a tick due at
    `previous` has run until `now`. Ticks keep a fixed cadence (a slow tick is not added to the
    interval); one that overran the next deadline is not made up for with a burst of ticks
    back to back: the clock restarts from now."""
    due = previous + interval
    if due < now:
        return now, 0.0
    return due, due - now


def _differs(known: VmState, raw: RawSample) -> bool:
    """What a tick can see changed without an event: state, name, vCPUs, memory."""
    if known.name != raw.name or known.vcpus != (raw.vcpus or known.vcpus):
        return True
    if raw.max_memory_kib and known.max_memory_mb != raw.max_memory_kib // 1024:
        return True
    current = raw.balloon.current_kib
    if current and known.memory_mb != current // 1024:
        return True
    # A shutdown in progress is shown as shutting_down while libvirt still says running.
    return known.state != domstate.state_name(raw.state) and known.reason != "shutdown requested"


def _state_code(state: str) -> int:
    for code, name in domstate.STATE_NAMES.items():
        if name == state:
            return code
    return 0
