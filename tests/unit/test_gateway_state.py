"""The gateway's cache and read views: name resolution, seq ordering, removal."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from gateway.core import views
from gateway.core.state import StateCache, resolve
from gateway.errors import Conflict, NotFound
from gateway.web.http_errors import status_of
from shared.messages import (
    CommandReply,
    DiskIO,
    HostMetrics,
    HostStatus,
    MetricsBatch,
    NetIO,
    VmMetrics,
    VmState,
    utc_now,
)
from tests.support.vm_states import vm_state

pytestmark = pytest.mark.unit

UA = "a0000000-0000-4000-8000-000000000001"
UB = "b0000000-0000-4000-8000-000000000001"


def vm(host: str, uuid: str, name: str, seq: int = 1, state: str = "running", **kw: Any) -> VmState:
    return vm_state(host, uuid, name, state=state, is_active=state != "stopped", seq=seq, **kw)


def batch(host: str, uuid: str, name: str, cpu: float, ts_offset_s: float = 0) -> MetricsBatch:
    ts = utc_now() + timedelta(seconds=ts_offset_s)
    m = VmMetrics(
        host=host,
        uuid=uuid,
        name=name,
        state="running",
        cpu_percent=cpu,
        vcpus=2,
        memory_used_mb=512,
        memory_total_mb=1024,
        memory_percent=50,
        ts=ts,
    )
    return MetricsBatch(host=host, interval_s=1, tick=1, host_metrics=HostMetrics(), vms=[m], ts=ts)


def test_resolve_by_name_uuid_and_host() -> None:
    vms = [vm("a", UA, "shared"), vm("b", UB, "shared"), vm("a", UA[:-1] + "9", "solo")]
    assert resolve(vms, "solo").name == "solo"
    assert resolve(vms, UB).host == "b"
    assert resolve(vms, "shared", host="a").uuid == UA
    with pytest.raises(Conflict) as conflict:
        resolve(vms, "shared")
    assert [c["host"] for c in conflict.value.extra["candidates"]] == ["a", "b"]
    assert status_of(conflict.value) == 409
    with pytest.raises(NotFound):
        resolve(vms, "ghost")
    with pytest.raises(NotFound):
        resolve(vms, "solo", host="b")


def test_out_of_order_states_are_dropped_by_seq() -> None:
    cache = StateCache()
    seen: list[str] = []
    cache.listen(lambda kind, item: seen.append(kind))
    assert cache.apply_vm_state(vm("a", UA, "web", seq=5, state="stopped"))
    assert not cache.apply_vm_state(vm("a", UA, "web", seq=4, state="running"))
    assert not cache.apply_vm_state(vm("a", UA, "web", seq=5, state="running"))
    assert cache.vm(("a", UA)).state == "stopped"  # type: ignore[union-attr]
    assert cache.apply_vm_state(vm("a", UA, "web", seq=6, state="running"))
    assert seen == ["vm_state", "vm_state"]


def test_removed_vm_disappears_with_its_metrics() -> None:
    cache = StateCache()
    cache.apply_host_status(HostStatus(host="a", online=True))
    cache.apply_vm_state(vm("a", UA, "web"))
    cache.apply_metrics(batch("a", UA, "web", 10))
    assert cache.metrics_of(("a", UA)) is not None
    assert cache.remove_vm("a", UA) is not None
    assert cache.vm(("a", UA)) is None and cache.metrics_of(("a", UA)) is None
    assert cache.remove_vm("a", UA) is None


def test_views_keep_the_seed_shapes_and_summarise() -> None:
    cache = StateCache()
    cache.apply_host_status(HostStatus(host="a", online=True, libvirt_connected=True))
    cache.apply_host_status(HostStatus(host="b", online=False))
    cache.apply_vm_state(vm("a", UA, "web"))
    cache.apply_vm_state(vm("b", UB, "idle", state="stopped"))
    cache.apply_metrics(batch("a", UA, "web", 40))
    snap = cache.snapshot(with_metrics=True)

    listed = views.vms_list(snap)
    assert listed["count"] == 2
    assert listed["vms"][0] == {
        "name": "idle",
        "state": "stopped",
        "vcpus": 2,
        "memory_mb": 1024,
        "is_active": False,
        "host": "b",
        "uuid": UB,
        "host_online": False,
    }
    summary = views.summary(snap)
    assert (summary["total_vms"], summary["running_vms"], summary["stopped_vms"]) == (2, 1, 1)
    assert (summary["allocated_vcpus"], summary["used_memory_mb"]) == (2, 512)
    assert summary["avg_cpu_percent"] == 40
    assert summary["hosts"] == {"total": 2, "online": 1, "offline": 1}

    no_metrics = views.vm_metrics(vm("b", UB, "idle", state="stopped"), None)
    assert no_metrics["cpu_percent"] is None and no_metrics["disk_io"] == []


def test_metrics_views_keep_the_seed_types_and_key_order() -> None:
    """The seed example: ints for memory_*_mb (925, 2048), floats or null for percentages,
    lists of dicts with int byte counters; the same keys, seed's first, before any batch."""
    from tests.support.gateway import check_seed_metrics

    metrics = VmMetrics(
        host="a",
        uuid=UA,
        name="web",
        state="running",
        cpu_percent=12.5,
        vcpus=2,
        memory_percent=45.2,
        memory_used_mb=925,
        memory_total_mb=2048,
        disk_io=[DiskIO(device="vda", read_bytes=1048576, write_bytes=524288)],
        network_io=[NetIO(interface="vnet0", rx_bytes=2097152, tx_bytes=1048576)],
    )
    seen = json.loads(json.dumps(views.vm_metrics(vm("a", UA, "web"), metrics)))
    check_seed_metrics(seen)
    assert (seen["memory_used_mb"], seen["memory_total_mb"]) == (925, 2048)
    assert type(seen["memory_used_mb"]) is int and seen["stale"] is False

    empty = json.loads(json.dumps(views.vm_metrics(vm("a", UA, "web"), None)))
    check_seed_metrics(empty)
    assert list(empty) == list(seen)
    assert list(seen)[:9] == [
        "name",
        "state",
        "cpu_percent",
        "vcpus",
        "memory_percent",
        "memory_used_mb",
        "memory_total_mb",
        "disk_io",
        "network_io",
    ]
    assert (empty["memory_total_mb"], empty["memory_used_mb"], empty["stale"]) == (1024, None, True)
    assert type(views.summary(StateCache().snapshot(with_metrics=True))["used_memory_mb"]) is int


def test_a_command_result_shows_at_once_until_the_agents_own_state_comes() -> None:
    cache = StateCache()
    pushed: list[str] = []
    cache.listen(lambda kind, _item: pushed.append(kind))
    t0 = utc_now()
    cache.apply_vm_state(vm("a", UA, "web", seq=5, ts=t0))
    later = t0 + timedelta(milliseconds=5)

    def reply(status: str, state: str, ts: Any) -> CommandReply:
        return CommandReply(id="j", host="a", status=status, vm=UA, state=state, ts=ts)  # type: ignore[arg-type]

    # Failures and replies older than what is held change nothing.
    assert not cache.apply_command_result(reply("failed", "paused", later))
    assert not cache.apply_command_result(reply("succeeded", "paused", t0))
    assert cache.apply_command_result(reply("succeeded", "paused", later))
    held = resolve(cache.snapshot().vms.values(), UA)
    assert (held.state, held.is_active, held.seq) == ("paused", True, 5)
    assert pushed == ["vm_state"]  # the agent's own state brings the push, not the reply
    # The agent's state (a higher seq) replaces the provisional one.
    assert cache.apply_vm_state(vm("a", UA, "web", seq=6, state="paused"))
    assert resolve(cache.snapshot().vms.values(), UA).seq == 6


def test_metrics_entries_of_another_host_or_an_unknown_vm_are_dropped() -> None:
    cache = StateCache()
    cache.apply_vm_state(vm("a", UA, "web"))
    cache.apply_vm_state(vm("b", UB, "db"))
    good = batch("a", UA, "web", 10)
    assert cache.apply_metrics(good) == (None, [("unknown_host", "no status for this host")])
    assert cache.snapshot().loads == {}
    cache.apply_host_status(HostStatus(host="a", online=True))
    forged = batch("b", UB, "db", 99).vms[0]  # host b's VM, sent on host a's topic
    stranger = batch("a", UB[:-1] + "7", "ghost", 1).vms[0]
    kept, dropped = cache.apply_metrics(
        good.model_copy(update={"vms": [*good.vms, forged, stranger]})
    )
    assert kept is not None and [m.uuid for m in kept.vms] == [UA]
    assert [r for r, _ in dropped] == ["identity", "unknown_vm"]
    assert cache.metrics_of(("b", UB)) is None
    assert cache.snapshot(with_metrics=True).metrics.keys() == {("a", UA)}


def test_find_follows_renames_removals_and_names_on_several_hosts() -> None:
    cache = StateCache()
    cache.apply_host_status(HostStatus(host="a", online=True))
    cache.apply_host_status(HostStatus(host="b", online=True))
    cache.apply_vm_state(vm("a", UA, "web"))
    cache.apply_vm_state(vm("b", UB, "web"))
    with pytest.raises(Conflict):
        cache.find("web")
    assert cache.find("web", "b").uuid == UB
    cache.apply_vm_state(vm("b", UB, "db", seq=2))  # renamed on its host
    assert cache.find("web").uuid == UA and cache.find("db").uuid == UB
    assert cache.find(UB).name == "db"
    cache.remove_vm("a", UA)
    with pytest.raises(NotFound):
        cache.find("web")
    with pytest.raises(NotFound):
        cache.find(UA)
