"""Reads the inside of every running VM at a slow cadence of its own, off every other path.

A guest agent may hang or never answer, and libvirt only gives up on it after its own timeout
(longer behind a busy domain job): each VM has at most one reading in flight, on a small pool
of its own, so a hung guest holds one worker and nothing else, neither the tick, nor a
command, nor the other VMs' readings while a worker is free. A reading past its deadline is
reported `unavailable` at once; its late answer, if it comes, is published then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from agent import __version__
from agent.errors import AgentError
from agent.guest.reading import NOT_RUNNING, guest_info, same, unavailable
from agent.homeassistant.guests import GuestEntities
from agent.hypervisor import GuestReading
from agent.hypervisor.callpool import DaemonPool
from shared.guest import GuestInfo
from shared.messages import VmState

if TYPE_CHECKING:
    from agent.config import AgentSettings
    from agent.hypervisor import Hypervisor
    from agent.inventory import Inventory
    from agent.publisher import Publisher

logger = logging.getLogger(__name__)

# Reads one VM (libvirt's adapter); lists the VMs (the inventory); publishes one VM's message,
# or None to clear it.
Read = Callable[[str], GuestReading]
Listing = Callable[[], Iterable[VmState]]
Publish = Callable[[str, GuestInfo | None], None]
# The MQTT connection's number: a new one means the broker may have lost retained messages.
Generation = Callable[[], int]

READ_TIMEOUT_S = 10.0
WORKERS = 4


class Pool(Protocol):
    """Where readings run (a `DaemonPool`; a test's own that answers when told)."""

    def submit(self, fn: Callable[[], GuestReading]) -> Future[GuestReading]: ...

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None: ...


# How often the watcher looks for due VMs and overdue readings.
SCAN_EVERY_S = 1.0


@dataclass
class _Vm:
    name: str
    due: float = 0.0
    started: float | None = None  # when the reading in flight began; None when none is
    running: bool = False
    last: GuestInfo | None = None


class GuestWatcher:
    def __init__(
        self,
        host: str,
        every_s: float,
        read: Read,
        listing: Listing,
        publish: Publish,
        *,
        timeout_s: float = READ_TIMEOUT_S,
        workers: int = WORKERS,
        generation: Generation = lambda: 0,
        pool: Pool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.every_s = every_s
        self.timeout_s = timeout_s
        self._read = read
        self._listing = listing
        self._publish = publish
        self._clock = clock
        self._generation = generation
        self._seen_generation = generation()
        self._poked: set[str] = set()
        self._poked_lock = threading.Lock()  # never held while publishing: see `poke`
        self._workers = workers
        self._pool: Pool = pool if pool is not None else DaemonPool(workers, "guest-info")
        self._vms: dict[str, _Vm] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ha: GuestEntities | None = None  # Home Assistant's sensors of each guest

    @classmethod
    def wired(
        cls,
        settings: AgentSettings,
        hypervisor: Hypervisor,
        inventory: Inventory,
        publisher: Publisher,
    ) -> GuestWatcher:
        """The agent's watcher: it reads through libvirt's adapter, lists the inventory, hears
        of the guest agent's comings and goings and of every VM whose state is cleared."""
        host, topics = settings.host_id, publisher.topics
        ha = publisher.ha
        entities = (
            GuestEntities(host, topics, ha.ha_prefix, __version__, publisher.publish_discovery)
            if ha is not None
            else None
        )

        def publish(uuid: str, msg: GuestInfo | None) -> None:
            publisher.publish("vm_guest", topics.vm_guest(host, uuid), msg)
            if entities is not None and msg is not None:
                entities.changed(msg)
            elif entities is not None:
                entities.removed(uuid)

        watcher = cls(
            host,
            settings.guest_info_every,
            hypervisor.guest,
            inventory.all,
            publish,
            generation=lambda: publisher.bus.generation,
        )
        if ha is not None and entities is not None:
            ha.on_request.append(entities.republish)
            watcher.ha = entities
        hypervisor.on_guest_agent = watcher.poke
        publisher.cleared.append(watcher.forget)
        return watcher

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Starts the scans; a cadence of 0 reads no guest at all."""
        if self.every_s <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="guest-info", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception:
                logger.exception("guest info scan failed")
            self._wake.wait(SCAN_EVERY_S)
            self._wake.clear()

    # -- what the service tells it ----------------------------------------------------------
    def poke(self, uuid: str) -> None:
        """The guest agent came or went: read that VM at the next scan. Called on libvirt's
        event thread, so it takes only a lock that nothing holds for long."""
        with self._poked_lock:
            self._poked.add(uuid)
        self._wake.set()

    def forget(self, uuid: str) -> None:
        """The VM is gone: its retained message is cleared, and a reading still in flight for
        it is never published (both under the lock that publishing takes)."""
        with self._lock:
            self._vms.pop(uuid, None)
            self._publish(uuid, None)

    def _republish(self) -> None:
        """After an MQTT reconnect: the broker may have lost every retained message."""
        generation = self._generation()
        if generation == self._seen_generation:
            return
        self._seen_generation = generation
        with self._lock:
            for uuid, vm in self._vms.items():
                if vm.last is not None:
                    self._publish(uuid, vm.last)

    # -- the scan ---------------------------------------------------------------------------
    def scan(self) -> None:
        """Starts the readings that are due, reports the overdue ones, and says `unavailable`
        for VMs that are not running."""
        self._republish()
        if self.ha is not None:
            self.ha.flush()
        now = self._clock()
        states = list(self._listing())
        with self._poked_lock:
            poked, self._poked = self._poked, set()
        start: list[str] = []
        with self._lock:
            for uuid in poked:
                if uuid in self._vms:
                    self._vms[uuid].due = 0.0
            busy = sum(1 for vm in self._vms.values() if vm.started is not None)
            for state in states:
                vm = self._vms.setdefault(state.uuid, _Vm(state.name))
                if vm.name != state.name and vm.last is not None:  # renamed: say so at once
                    self._settle(state.uuid, vm, vm.last.model_copy(update={"name": state.name}))
                vm.name = state.name
                if state.state == "running" and not vm.running:
                    vm.due = 0.0  # just started (or first seen): read it at once
                vm.running = state.state == "running"
                if not vm.running:
                    # Built only when it would change: a host may hold thousands of stopped VMs.
                    if vm.last is None or vm.last.reason != NOT_RUNNING or vm.last.addresses:
                        message = unavailable(self.host, state.uuid, vm.name, NOT_RUNNING)
                        self._settle(state.uuid, vm, message)
                elif vm.started is not None:
                    if now - vm.started > self.timeout_s:
                        reason = f"the guest did not answer within {self.timeout_s:.0f}s"
                        self._settle(
                            state.uuid, vm, unavailable(self.host, state.uuid, vm.name, reason)
                        )
                elif now >= vm.due and busy < self._workers:
                    vm.started = now
                    busy += 1
                    start.append(state.uuid)
        for uuid in start:
            self._submit(uuid)

    def _submit(self, uuid: str) -> None:
        try:
            future = self._pool.submit(lambda: self._read(uuid))
        except AgentError:  # stopping
            return
        future.add_done_callback(lambda f: self._done(uuid, f))

    def _done(self, uuid: str, future: Future[GuestReading]) -> None:
        try:
            reading = future.result()
            error = None
        except Exception as exc:  # libvirt's failure, the VM gone, or a stop
            reading, error = None, str(exc) or type(exc).__name__
        with self._lock:
            vm = self._vms.get(uuid)
            if vm is None:
                return  # forgotten while the reading ran: the VM is gone
            vm.started = None
            vm.due = self._clock() + self.every_s
            if not vm.running:
                return  # stopped while it was read: "not running" stands
            if reading is not None:
                message = guest_info(self.host, uuid, vm.name, reading)
            else:
                message = unavailable(self.host, uuid, vm.name, f"not read: {error}")
            self._settle(uuid, vm, message)

    def _settle(self, uuid: str, vm: _Vm, message: GuestInfo) -> None:
        """Publishes the message if it differs from the last one (caller holds the lock)."""
        if same(vm.last, message):
            return
        vm.last = message
        self._publish(uuid, message)
