"""The agent's view of its VMs: the last state published for each, `seq`, and state waiters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from agent import domstate
from agent.clock import SYSTEM_CLOCK, Clock
from agent.hypervisor import DomainInfo
from shared.messages import ACTIVE_STATES, VmState, VmStateName, utc_now

KIB_PER_MIB = 1024


def next_seq(previous: int | None, now_us: int) -> int:
    """Microsecond clock, never going back: grows per VM across agent restarts too."""
    return max(now_us, (previous or 0) + 1)


def shown_state(state: int, shutdown_requested: bool) -> VmStateName:
    """libvirt keeps a QEMU guest RUNNING until it is off, so a shutdown the agent asked for is
    shown as `shutting_down` until the guest stops."""
    name = domstate.state_name(state)
    return "shutting_down" if shutdown_requested and name in ("running", "paused") else name


def to_vm_state(
    host: str, info: DomainInfo, seq: int, *, shutdown_requested: bool = False
) -> VmState:
    """The published form of a reading (see `shown_state`)."""
    name = shown_state(info.state, shutdown_requested)
    overlaid = name != domstate.state_name(info.state)
    reason = "shutdown requested" if overlaid else domstate.reason_words(info.state, info.reason)
    return VmState(
        host=host,
        uuid=info.uuid,
        name=info.name,
        state=name,
        reason=reason,
        is_active=name in ACTIVE_STATES,
        vcpus=info.vcpus,
        memory_mb=info.memory_kib // KIB_PER_MIB,
        max_memory_mb=info.max_memory_kib // KIB_PER_MIB,
        autostart=info.autostart,
        persistent=info.persistent,
        seq=seq,
        ts=utc_now(),
    )


def _same(a: VmState, b: VmState) -> bool:
    keep = {"ts", "seq"}
    return a.model_dump(exclude=keep) == b.model_dump(exclude=keep)


class Inventory:
    """Thread-safe; `synced` is true once a full listing of the current connection is in.

    Only the service's event worker records states (so `seq` order is publication order);
    command workers read, and move their VMs through the shutdown steps below.

    The one owner of a VM's shutdown: a shutdown job holds the VM from its admission to its
    end (`admit_shutdown` .. `release_shutdown`: one at a time per VM, a bounded number in
    all); while the guest has been asked and the job still waits (`shutdown_asked` ..
    `shutdown_settled`), the VM is shown `shutting_down`.
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self._states: dict[str, VmState] = {}
        # uuid -> whether the guest has been asked yet, for each VM a shutdown job holds.
        self._shutdowns: dict[str, bool] = {}
        self._cond = threading.Condition()
        self.synced = False

    def admit_shutdown(self, uuid: str, limit: int) -> tuple[str, str] | None:
        """Takes the VM for a shutdown job, or says why not (code, message)."""
        with self._cond:
            if uuid in self._shutdowns:
                return "in_progress", "a shutdown of this VM is already in progress"
            if len(self._shutdowns) >= limit:
                return "busy", "too many shutdowns in progress; retry later"
            self._shutdowns[uuid] = False
            return None

    def shutdown_asked(self, uuid: str) -> None:
        """The guest is being asked: shown `shutting_down` from now on."""
        with self._cond:
            if uuid in self._shutdowns:
                self._shutdowns[uuid] = True

    def shutdown_settled(self, uuid: str) -> None:
        """The job stopped waiting for the guest: shown as libvirt reports it again."""
        with self._cond:
            if uuid in self._shutdowns:
                self._shutdowns[uuid] = False

    def release_shutdown(self, uuid: str) -> None:
        """The job has ended: the VM may take another shutdown."""
        with self._cond:
            self._shutdowns.pop(uuid, None)

    def _asked(self, uuid: str) -> bool:
        return self._shutdowns.get(uuid, False)

    def state_name(self, uuid: str, state: int) -> VmStateName:
        """A libvirt state code in words, as the VM is shown (a requested shutdown included)."""
        with self._cond:
            requested = self._asked(uuid)
        return shown_state(state, requested)

    def update(self, info: DomainInfo, *, force: bool = False) -> VmState | None:
        """Records a fresh reading; returns the new state when it changed (or `force`)."""
        with self._cond:
            old = self._states.get(info.uuid)
            seq = next_seq(old.seq if old else None, time.time_ns() // 1000)
            new = to_vm_state(self.host, info, seq, shutdown_requested=self._asked(info.uuid))
            if old is not None and not force and _same(old, new):
                return None
            self._states[info.uuid] = new
            self._cond.notify_all()
            return new

    def replace_all(self, infos: Iterable[DomainInfo]) -> tuple[list[VmState], list[VmState]]:
        """A full listing: every current state (republished), and the VMs that vanished."""
        infos = list(infos)
        current = {i.uuid for i in infos}
        states = [s for i in infos if (s := self.update(i, force=True)) is not None]
        with self._cond:
            gone = [s for u, s in self._states.items() if u not in current]
            for s in gone:
                del self._states[s.uuid]
            self.synced = True
            self._cond.notify_all()
        return states, gone

    def remove(self, uuid: str) -> VmState | None:
        with self._cond:
            old = self._states.pop(uuid, None)
            self._cond.notify_all()
            return old

    def get(self, uuid: str) -> VmState | None:
        with self._cond:
            return self._states.get(uuid)

    def all(self) -> list[VmState]:
        with self._cond:
            return list(self._states.values())

    def uuids(self) -> set[str]:
        with self._cond:
            return set(self._states)

    def wait_for(
        self,
        uuid: str,
        predicate: Callable[[VmState | None], bool],
        timeout: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> bool:
        """Blocks until the VM's recorded state satisfies `predicate`, or the timeout."""
        with self._cond:
            return clock.wait_for(self._cond, lambda: predicate(self._states.get(uuid)), timeout)
