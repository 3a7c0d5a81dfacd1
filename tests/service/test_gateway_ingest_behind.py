"""A gateway that cannot keep up with its fleet says so: metrics batches it sheds unapplied and
batches it applies late are counted in /health and /metrics, the newest figures still win, and
states and events are never shed for metrics. A real Mosquitto, the gateway as a real process,
batches published as an agent publishes them (QoS 0 on the host's metrics topic)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from shared.messages import (
    HostMetrics,
    HostStatus,
    MetricsBatch,
    VmEvent,
    VmMetrics,
    VmState,
    dump,
    iso_z,
    utc_now,
)
from shared.topics import Topics
from tests.support.broker import Broker
from tests.support.gateway import GatewayProc, wait_until
from tests.support.mqtt import Recorder
from tests.support.vm_states import vm_state

pytestmark = pytest.mark.service

T = Topics("kvmsup")
HOST = "flood"
VMS = 100


def uuid_of(i: int) -> str:
    return f"f0000000-0000-4000-8000-{i:012x}"


def state(i: int, seq: int, st: str = "running") -> VmState:
    return vm_state(
        HOST,
        uuid_of(i),
        f"flood-{i:03d}",
        state=st,
        is_active=st == "running",
        vcpus=1,
        memory_mb=256,
        max_memory_mb=256,
        seq=seq,
    )


def batch(tick: int, age_s: float = 0.0) -> bytes:
    """One tick of the host: every VM's CPU % is the tick / 10 (each tick is recognisable)."""
    ts = utc_now() - timedelta(seconds=age_s)
    vms = [
        VmMetrics(
            host=HOST,
            uuid=uuid_of(i),
            name=f"flood-{i:03d}",
            state="running",
            ts=ts,
            cpu_percent=tick / 10,
            vcpus=1,
            memory_used_mb=128,
            memory_total_mb=256,
            interval_s=1.0,
        )
        for i in range(VMS)
    ]
    return dump(
        MetricsBatch(
            host=HOST,
            ts=ts,
            interval_s=1.0,
            tick=tick,
            host_metrics=HostMetrics(cpu_percent=1.0),
            vms=vms,
        )
    )


@pytest.fixture
def agent(broker: Broker) -> Iterator[Recorder]:
    client = Recorder(broker.port)
    status = HostStatus(host=HOST, online=True, libvirt_connected=True)
    client.publish(T.host_status(HOST), dump(status), retain=True)
    for i in range(VMS):
        client.publish(T.vm_state(HOST, uuid_of(i)), dump(state(i, 1)), retain=True)
    yield client
    client.close()


@pytest.fixture
def gw(agent: Recorder, start_gateway: Callable[..., GatewayProc]) -> GatewayProc:
    gateway = start_gateway()
    wait_until(lambda: gateway.get("/vms").json()["count"] == VMS, timeout=30)
    return gateway


def health(gw: GatewayProc) -> dict[str, Any]:
    body: dict[str, Any] = gw.get("/health").json()
    return body


def scrape(gw: GatewayProc, series: str) -> float:
    for line in gw.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {series} in /metrics")


def test_a_flood_of_metrics_is_shed_and_counted_and_the_newest_figures_win(
    gw: GatewayProc, agent: Recorder
) -> None:
    # Rendered first, then published as fast as the client can: the broker hands the gateway
    # batches far faster than anyone can validate 100 VMs each.
    ticks = 400
    payloads = [batch(tick) for tick in range(1, ticks + 1)]
    topic = T.host_metrics(HOST)
    event = VmEvent(host=HOST, kind="lifecycle", uuid=uuid_of(7), name="flood-007", event="x")
    for tick, payload in enumerate(payloads, start=1):
        agent.client.publish(topic, payload, qos=0)
        if tick == ticks // 2:
            # In the middle of the flood, a state change and an event: never shed for metrics.
            agent.publish(T.vm_state(HOST, uuid_of(3)), dump(state(3, 2, "paused")), retain=True)
            agent.publish(T.host_events(HOST), dump(event))

    # The last batch is applied at last (nothing newer can supersede it); the broker hands
    # messages over in the order they were published, so nothing of the flood is left behind.
    wait_until(lambda: gw.get("/vm/flood-042/metrics").json()["cpu_percent"] == ticks / 10, 60)
    body = health(gw)
    assert body["ingest_queue"] == {"metrics_batches": 0, "metrics_bytes": 0, "other_messages": 0}

    shed = body["messages_dropped"]["ingest_behind"]
    applied = body["metrics_applied"]["batches"]
    assert shed > 0, body
    # Each batch published was either applied or counted as shed; the broker may lose QoS 0
    # messages to a slow subscriber, never invent them.
    assert applied >= 1 and applied + shed <= ticks, body
    assert body["metrics_applied"]["vm_metrics"] == applied * VMS
    assert body["messages_dropped"]["inbox_full"] == 0
    line = 'kvmsup_gateway_messages_dropped_total{gateway="gw-test",reason="ingest_behind"}'
    assert scrape(gw, line) == shed

    assert gw.get("/vm/flood-003").json()["state"] == "paused"
    events = wait_until(
        lambda: gw.get("/events", params={"vm": uuid_of(7)}).json()["events"], timeout=30
    )
    assert [e["event"] for e in events] == ["x"]
    summary = wait_until(
        lambda: (s := gw.get("/stats/summary").json())["avg_cpu_percent"] == ticks / 10 and s,
        timeout=30,
    )
    assert summary["paused_vms"] == 1


def test_a_batch_taken_long_ago_is_applied_and_counted_late(
    gw: GatewayProc, agent: Recorder
) -> None:
    topic = T.host_metrics(HOST)
    agent.client.publish(topic, batch(1), qos=0)
    wait_until(lambda: health(gw)["metrics_applied"]["batches"] == 1, timeout=30)
    assert health(gw)["metrics_late"] == {"batches": 0, "vm_metrics": 0}

    # As a broker backlog delivers it: taken a minute ago, 60 intervals of this host.
    agent.client.publish(topic, batch(2, age_s=60), qos=0)
    late = wait_until(lambda: health(gw)["metrics_late"]["batches"] == 1 and health(gw), 30)
    assert late["metrics_late"] == {"batches": 1, "vm_metrics": VMS}
    assert late["metrics_applied"]["batches"] == 2
    # Still the newest figures of the host: shown, with their own (old) timestamp.
    body = gw.get("/vm/flood-000/metrics").json()
    assert body["cpu_percent"] == 0.2
    assert body["ts"] < iso_z(utc_now() - timedelta(seconds=59))
    gw_id = 'gateway="gw-test"'
    assert scrape(gw, f"kvmsup_gateway_metrics_batches_late_total{{{gw_id}}}") == 1
    assert scrape(gw, f"kvmsup_gateway_vm_metrics_late_total{{{gw_id}}}") == VMS
