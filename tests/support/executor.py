"""The agent's command executor on a real Hypervisor (libvirt's in-process test:/// driver):
what the command tests drive, and a gate that holds libvirt calls at a chosen stage."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from agent.commands.executor import CommandExecutor
from agent.commands.settings import ExecutorSettings
from agent.hypervisor import Hypervisor, HypervisorEvent
from agent.inventory import Inventory
from shared.messages import CommandReply, CommandRequest, utc_now


class Gate:
    """Holds the calls at `stage` after the first `skip` of them, until `release` is set."""

    def __init__(self, stage: str, skip: int = 0) -> None:
        self.stage = stage
        self.skip = skip
        self.reached = threading.Event()
        self.release = threading.Event()
        self.passed: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, stage: str, _uuid: str) -> None:
        with self._lock:
            self.passed.append(stage)
            if stage != self.stage:
                return
            if self.skip > 0:
                self.skip -= 1
                return
        self.reached.set()
        assert self.release.wait(30), "the test never released the gate"

    def count(self, stage: str) -> int:
        with self._lock:
            return self.passed.count(stage)


class LiveExecutor:
    """A real Hypervisor on a test:/// node, an inventory and an executor; every reply the
    executor sends is kept, and a test waits for a request's final one."""

    def __init__(
        self,
        uri: str,
        settings: ExecutorSettings,
        on_snapshots: Callable[[str], None] | None = None,
    ) -> None:
        self.events: queue.Queue[HypervisorEvent] = queue.Queue()
        self.hv = Hypervisor(uri, self.events)
        self.hv.start()
        self.connects = 0
        self.wait_connected(1)
        self.inventory = Inventory("h")
        self.inventory.replace_all(self.hv.list_domains())
        self.replies: list[CommandReply] = []
        self._cond = threading.Condition()
        extra: dict[str, Any] = {"on_snapshots": on_snapshots} if on_snapshots else {}
        self.executor = CommandExecutor(
            "h", self.hv, self.inventory, lambda *_: None, lambda _u: None, settings, **extra
        )

    def wait_connected(self, count: int) -> None:
        while self.connects < count:
            ev = self.events.get(timeout=15)
            if ev.kind == "connected":
                self.connects += 1

    def send(self, reply: CommandReply) -> None:
        with self._cond:
            self.replies.append(reply)
            self._cond.notify_all()

    def request(
        self, request_id: str, action: str, vm: str, begin_within: float, params: dict[str, Any]
    ) -> None:
        """Submit a request whose libvirt action must begin within `begin_within` seconds."""
        request = CommandRequest.model_validate(
            {
                "id": request_id,
                "action": action,
                "vm": vm,
                "params": params,
                "not_after": utc_now() + timedelta(seconds=begin_within),
            }
        )
        self.executor.submit(request, self.send)

    def final(self, request_id: str = "c1", timeout: float = 15) -> CommandReply:
        with self._cond:
            assert self._cond.wait_for(
                lambda: any(r.id == request_id and r.is_final for r in self.replies), timeout
            ), f"no final reply for {request_id}: {self.replies}"
            return next(r for r in self.replies if r.id == request_id and r.is_final)

    def has_final(self, request_id: str = "c1") -> bool:
        with self._cond:
            return any(r.id == request_id and r.is_final for r in self.replies)

    def close(self) -> None:
        self.hv.hold = None
        self.executor.close_workers(wait=True)
        self.hv.stop()
