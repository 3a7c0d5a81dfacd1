"""Fleet-wide reads served ready: the same bodies as the views, rebuilt only when the cache
changed, at once after a state change, at most every `metrics_every_s` for metrics alone."""

from __future__ import annotations

import json

import pytest

from gateway.core import views
from gateway.core.readviews import ReadViews
from gateway.core.state import StateCache
from shared.messages import HostStatus
from tests.unit.test_gateway_state import batch, vm

pytestmark = pytest.mark.unit

UA = "a0000000-0000-4000-8000-000000000001"
UB = "b0000000-0000-4000-8000-000000000001"
UC = "c0000000-0000-4000-8000-000000000001"


def fleet() -> StateCache:
    cache = StateCache()
    cache.apply_host_status(HostStatus(host="a", online=True))
    cache.apply_host_status(HostStatus(host="b", online=False))
    cache.apply_vm_state(vm("a", UA, "web"))
    cache.apply_vm_state(vm("b", UB, "db", state="stopped"))
    cache.apply_vm_state(vm("a", UC, "Zoë"))  # escaped as Flask's jsonify escapes it
    cache.apply_metrics(batch("a", UA, "web", 10))
    return cache


def test_bodies_are_the_views_of_the_cache() -> None:
    cache = fleet()
    reads = ReadViews(cache)
    snap = cache.snapshot(with_metrics=True)
    assert json.loads(reads.vms_body()) == views.vms_list(snap)
    assert reads.vms_list() == views.vms_list(snap)
    assert json.loads(reads.summary_body()) == views.summary(snap)
    assert json.loads(reads.hosts_body()) == views.hosts_list(snap)
    assert reads.all_metrics() == views.all_metrics(snap)
    assert b"Zo\\u00eb" in reads.vms_body()


def test_a_state_change_shows_at_once_and_metrics_at_most_every_interval() -> None:
    cache = fleet()
    held = ReadViews(cache, metrics_every_s=3600)  # metrics alone never rebuild it
    fresh = ReadViews(cache, metrics_every_s=0)
    first = held.summary_body()
    assert held.vms_body() is held.vms_body()  # nothing changed: the same bytes, not rebuilt

    cache.apply_metrics(batch("a", UA, "web", 90))
    assert held.summary_body() is first
    assert json.loads(fresh.summary_body())["avg_cpu_percent"] == 90

    cache.apply_vm_state(vm("a", UA, "web", seq=2, state="paused"))
    for reads in (held, fresh):
        summary = json.loads(reads.summary_body())
        assert summary["paused_vms"] == 1 and summary["avg_cpu_percent"] == 90
        listed = {v["name"]: v["state"] for v in json.loads(reads.vms_body())["vms"]}
        assert listed == {"web": "paused", "db": "stopped", "Zoë": "running"}

    cache.remove_vm("b", UB)
    assert json.loads(held.vms_body())["count"] == 2
    cache.apply_host_status(HostStatus(host="a", online=False))
    assert not any(v["host_online"] for v in json.loads(held.vms_body())["vms"])
