"""The metrics tick (agent/tick/ticker.py): one batch per tick on the contract's topics, a
slow or failing libvirt never stalling it, and missed lifecycle events caught by the next tick.

Pure: libvirt is a stand-in, the bus a recorder, and the sampling worker is replaced by a pool
that answers at once (or reports the sample still running): the real one is a thread. The
loop that keeps the cadence between ticks is the service's thread body (`AgentService._ticker`)
and is exercised by the service tier, not here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from agent.config import AgentSettings
from agent.errors import HypervisorError
from agent.hypervisor import DomainInfo, NodeFacts
from agent.hypervisor.bulkstats import BalloonStats, RawSample
from agent.inventory import Inventory
from agent.publisher import Publisher
from agent.tick.sampler import Sampler
from agent.tick.ticker import Ticker, next_deadline
from shared.messages import utc_now
from shared.topics import Topics
from tests.support.agent_bus import RecordingBus

pytestmark = pytest.mark.unit

HOST = "kvm1"
UA = "a0000000-0000-4000-8000-000000000001"
UB = "b0000000-0000-4000-8000-000000000002"
METRICS = f"kvmsup/v1/{HOST}/metrics"
RUNNING, PAUSED, SHUTOFF = 1, 3, 5
S = 1_000_000_000


class Libvirt:
    """libvirt's answers to a tick: the bulk sample and the node figures."""

    def __init__(self) -> None:
        self.connected = True
        self.samples: list[RawSample] = []
        self.fail: Exception | None = None
        self.calls = 0

    def sample(self) -> list[RawSample]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self.samples

    def node_free_memory_mb(self) -> int:
        return 4096

    def node_cpu_stats(self) -> dict[str, int]:
        return {"user": 10 * S, "kernel": 5 * S, "idle": 85 * S, "iowait": 0}


class StillRunning:
    """A sample that has not come back: waiting on it times out (at once, here)."""

    def __init__(self) -> None:
        self.waited: list[float | None] = []

    def done(self) -> bool:
        return False

    def result(self, timeout: float | None = None) -> Any:
        self.waited.append(timeout)
        raise TimeoutError


class InlinePool:
    """The sampling worker, run in the caller; `hang` leaves the next sample running."""

    def __init__(self) -> None:
        self.submitted = 0
        self.hang = False
        self.running = StillRunning()

    def submit(self, fn: Callable[[], Any]) -> Any:
        self.submitted += 1
        if self.hang:
            return self.running
        future: Future[Any] = Future()
        try:
            future.set_result(fn())
        except Exception as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        pass


def info(uuid: str, name: str, state: int = RUNNING, memory_mb: int = 2048) -> DomainInfo:
    return DomainInfo(uuid, name, state, 1, 2, memory_mb * 1024, memory_mb * 1024, False, True)


def raw(uuid: str, name: str, t_s: float, cpu_s: float, state: int = RUNNING) -> RawSample:
    return RawSample(
        uuid=uuid,
        name=name,
        state=state,
        reason=1,
        taken_ns=int(t_s * S),
        cpu_time_ns=int(cpu_s * S),
        vcpus=2,
        max_memory_kib=2048 * 1024,
        balloon=BalloonStats(current_kib=2048 * 1024, rss_kib=1024 * 1024),
    )


class World:
    def __init__(self, *, interval: float = 2.0, vm_metrics_every: int = 5) -> None:
        settings = AgentSettings(
            host_id=HOST,
            topic_prefix="kvmsup",
            metrics_interval=interval,
            vm_metrics_every=vm_metrics_every,
            ha_discovery=False,
        )
        self.bus = RecordingBus()
        self.libvirt = Libvirt()
        self.inventory = Inventory(HOST)
        self.publisher = Publisher(
            settings,
            Topics("kvmsup"),
            self.bus,  # type: ignore[arg-type]
            self.libvirt,  # type: ignore[arg-type]
            self.inventory,
            None,
            utc_now(),
        )
        self.publisher.node = NodeFacts("QEMU", "8.2.0", 8, 16384, "x86_64")
        self.refreshed: list[tuple[str, str | None]] = []
        self.ticker = Ticker(
            settings,
            self.libvirt,  # type: ignore[arg-type]
            self.inventory,
            Sampler(HOST, 5),
            self.publisher,
            lambda uuid, name: self.refreshed.append((uuid, name)),
        )
        self.pool = InlinePool()
        self.ticker._sampling = self.pool  # type: ignore[assignment]

    def vms(self, *infos: DomainInfo) -> None:
        self.inventory.replace_all(infos)


def two_vms() -> World:
    world = World()
    world.vms(info(UA, "web"), info(UB, "db"))
    world.libvirt.samples = [raw(UA, "web", 100, 10), raw(UB, "db", 100, 20)]
    return world


def test_each_tick_publishes_one_batch_with_every_vm_at_qos_0_unretained() -> None:
    world = two_vms()
    world.ticker.run_tick()
    world.libvirt.samples = [raw(UA, "web", 102, 11), raw(UB, "db", 102, 20)]
    world.ticker.run_tick()
    batches = world.bus.payloads(METRICS)
    assert [b["tick"] for b in batches] == [1, 2]
    assert all((m.qos, m.retain) == (0, False) for m in world.bus.sent)
    second = batches[1]
    assert (second["host"], second["interval_s"]) == (HOST, 2.0)
    assert {v["uuid"]: v["name"] for v in second["vms"]} == {UA: "web", UB: "db"}
    # One second of CPU over two seconds on two vCPUs: 25 %, from the counters between ticks.
    cpu = {v["uuid"]: v["cpu_percent"] for v in second["vms"]}
    assert cpu[UA] == pytest.approx(25.0) and cpu[UB] == pytest.approx(0.0)
    host = second["host_metrics"]
    assert (host["vms_total"], host["vms_running"], host["cpus"]) == (2, 2, 8)
    assert (host["memory_total_mb"], host["memory_free_mb"]) == (16384, 4096)


def test_each_vms_own_metrics_go_out_every_nth_tick_only() -> None:
    world = World(vm_metrics_every=2)
    world.vms(info(UA, "web"))
    world.libvirt.samples = [raw(UA, "web", 100, 10)]
    vm_topic = f"kvmsup/v1/{HOST}/vm/{UA}/metrics"
    world.ticker.run_tick()
    assert [m.topic for m in world.bus.sent] == [METRICS]
    world.ticker.run_tick()
    assert [m.topic for m in world.bus.sent] == [METRICS, METRICS, vm_topic]
    vm_msg = world.bus.sent[-1]
    assert (vm_msg.qos, vm_msg.retain) == (0, False)
    assert json.loads(vm_msg.payload)["uuid"] == UA


@pytest.mark.parametrize("connected, synced", [(False, True), (True, False)])
def test_no_tick_while_libvirt_is_down_or_the_vms_are_not_listed_yet(
    connected: bool, synced: bool
) -> None:
    world = World()
    world.libvirt.connected = connected
    if synced:
        world.vms(info(UA, "web"))
    assert world.ticker.run_tick() is None
    assert world.bus.sent == [] and world.libvirt.calls == 0 and world.ticker.tick == 0


def test_a_slow_sample_does_not_stall_the_tick_every_vm_is_reported_stale() -> None:
    world = two_vms()
    world.pool.hang = True
    batch = world.ticker.run_tick()
    assert batch is not None
    # It waited one interval for libvirt, no longer.
    assert world.pool.running.waited == [2.0]
    [published] = world.bus.payloads(METRICS)
    assert published["tick"] == 1
    assert sorted((v["uuid"], v["stale"]) for v in published["vms"]) == [
        (UA, True),
        (UB, True),
    ]
    assert published["host_metrics"]["memory_free_mb"] is None  # not read this tick
    assert world.refreshed == []  # a stale reading says nothing about the VMs' state


def test_a_short_interval_still_waits_a_second_for_the_sample() -> None:
    world = World(interval=0.2)
    world.vms(info(UA, "web"))
    world.pool.hang = True
    world.ticker.run_tick()
    assert world.pool.running.waited == [1.0]


def test_a_sample_still_running_is_awaited_again_not_started_twice() -> None:
    world = two_vms()
    world.pool.hang = True
    world.ticker.run_tick()
    world.ticker.run_tick()
    # One hung libvirt call at a time: the next tick waits on the same sample.
    assert world.pool.submitted == 1
    assert [b["tick"] for b in world.bus.payloads(METRICS)] == [1, 2]


def test_a_failed_sample_publishes_nothing_and_the_next_tick_carries_on() -> None:
    world = two_vms()
    world.libvirt.fail = HypervisorError("libvirt said no")
    assert world.ticker.run_tick() is None
    assert world.bus.sent == []
    world.libvirt.fail = None
    world.ticker.run_tick()
    assert [b["tick"] for b in world.bus.payloads(METRICS)] == [1]


def test_a_state_change_without_its_event_is_refreshed_by_the_next_tick() -> None:
    world = two_vms()
    world.libvirt.samples = [raw(UA, "web", 100, 10, state=PAUSED), raw(UB, "db", 100, 20)]
    world.ticker.run_tick()
    assert world.refreshed == [(UA, "web")]


def test_a_rename_and_a_vanished_vm_are_refreshed_too() -> None:
    world = two_vms()
    world.libvirt.samples = [raw(UA, "frontend", 100, 10)]  # renamed; db is gone
    world.ticker.run_tick()
    assert sorted(world.refreshed, key=str) == sorted([(UA, "frontend"), (UB, None)], key=str)


def test_an_unchanged_vm_is_not_refreshed() -> None:
    world = two_vms()
    world.ticker.run_tick()
    assert world.refreshed == []


def test_a_shutdown_in_progress_is_not_mistaken_for_a_change() -> None:
    world = two_vms()
    assert world.inventory.admit_shutdown(UA, limit=4) is None
    world.inventory.shutdown_asked(UA)
    world.inventory.update(info(UA, "web"))  # shown shutting_down, libvirt still says running
    assert world.inventory.get(UA).state == "shutting_down"  # type: ignore[union-attr]
    world.ticker.run_tick()
    assert world.refreshed == []


def test_the_tick_clock_keeps_its_cadence_and_never_bursts_to_catch_up() -> None:
    # A tick that took 0.3 s of a 2 s interval: the next one is still 2 s after this one.
    assert next_deadline(100.0, 2.0, 100.3) == (102.0, pytest.approx(1.7))
    # One that took 5 s overran two deadlines: the next runs at once, and the clock restarts
    # from now instead of running the missed ticks back to back.
    due, wait = next_deadline(100.0, 2.0, 105.0)
    assert (due, wait) == (105.0, 0.0)
    assert next_deadline(due, 2.0, 105.1) == (107.0, pytest.approx(1.9))
