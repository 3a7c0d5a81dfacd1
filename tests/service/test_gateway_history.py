"""Metrics history: in memory, each VM's minute packed as its ticks arrive and `points=`
downsampling (unit); `GET /vm/<name>/history` against a real gateway fed through a real
Mosquitto (service): the points are the metrics an agent published, before and after a gateway
restart, at full resolution and as minute averages and maxima; `points=` is honoured; bad
queries get JSON 400s. The SQLite side is in tests/service/test_gateway_history_store.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.core.history import Agg, Tail, at_most, ticks_at_most
from shared.messages import (
    DiskIO,
    HostMetrics,
    HostStatus,
    MetricsBatch,
    NetIO,
    VmMetrics,
    dump,
    iso_z,
)
from shared.topics import Topics
from tests.support.broker import Broker
from tests.support.gateway import GatewayProc, wait_until
from tests.support.history import HOST as BATCH_HOST
from tests.support.history import T0, batch, uuid, vm
from tests.support.mqtt import Recorder
from tests.support.vm_states import vm_state

pytestmark = pytest.mark.service

T = Topics("kvmsup")
HOST = "hist-a"
UUID = "d0000000-0000-4000-8000-00000000000d"
TICKS = 40  # 80 s of 2 s ticks: at least one whole minute, and the minute still open


@pytest.fixture
def agent(broker: Broker) -> Iterator[Recorder]:
    """Plays host `hist-a` with its VM `web`, as an agent would (retained status and state)."""
    client = Recorder(broker.port)
    status = HostStatus(host=HOST, online=True, libvirt_connected=True, interval_s=2.0)
    client.publish(T.host_status(HOST), dump(status), retain=True)
    vm = vm_state(HOST, UUID)
    client.publish(T.vm_state(HOST, UUID), dump(vm), retain=True)
    yield client
    client.close()


def tick(k: int, ts: datetime) -> MetricsBatch:
    """The k-th tick: every figure differs from tick to tick, rates over two devices."""
    m = VmMetrics(
        host=HOST,
        uuid=UUID,
        name="web",
        state="running",
        vcpus=2,
        cpu_percent=None if k == 0 else round(1.5 + 2.25 * k, 2),  # null on a first sample
        memory_percent=round(40 + k / 4, 2),
        memory_used_mb=400 + k,
        memory_total_mb=1024,
        memory_source="guest",
        ts=ts,
        interval_s=2.0,
        disk_io=[
            DiskIO(device="vda", read_bytes=0, write_bytes=0, read_bps=1000.25 * k, write_bps=7.5),
            DiskIO(device="vdb", read_bytes=0, write_bytes=0, read_bps=0.5, write_bps=None),
        ],
        network_io=[
            NetIO(interface="vnet0", rx_bytes=0, tx_bytes=0, rx_bps=12_345_678.91, tx_bps=k)
        ],
    )
    return MetricsBatch(
        host=HOST, interval_s=2.0, tick=k, host_metrics=HostMetrics(), vms=[m], ts=ts
    )


def expected(b: MetricsBatch) -> dict[str, Any]:
    """What the history must say of a tick: the published figures, rates summed."""
    m = b.vms[0]
    return {
        "ts": iso_z(m.ts),
        "cpu_percent": m.cpu_percent,
        "memory_percent": m.memory_percent,
        "memory_used_mb": m.memory_used_mb,
        "disk_read_bps": sum(d.read_bps or 0 for d in m.disk_io),
        "disk_write_bps": sum(d.write_bps or 0 for d in m.disk_io),
        "net_rx_bps": sum(n.rx_bps or 0 for n in m.network_io),
        "net_tx_bps": sum(n.tx_bps or 0 for n in m.network_io),
    }


def as_published(point: dict[str, Any]) -> dict[str, Any]:
    fields = ("ts", "cpu_percent", "memory_percent", "memory_used_mb")
    fields += ("disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps")
    assert point["samples"] == 1
    for f in fields[1:]:  # one tick: its maximum is itself
        assert point[f"{f}_max"] == point[f], point
    return {f: point[f] for f in fields}


def publish_ticks(agent: Recorder, gw: GatewayProc) -> list[MetricsBatch]:
    # Ticks in the past, 2 s apart, as an agent's would be once they arrived: one at a time.
    # Sent back to back, several would wait for the ingest together, and the gateway keeps
    # only the newest batch of a host that is behind (counted as `ingest_behind`).
    start = time.time() - 2 * TICKS - 5
    batches = [tick(k, datetime.fromtimestamp(start + 2 * k, UTC)) for k in range(TICKS)]
    applied = gw.get("/health").json()["metrics_applied"]["batches"]
    for n, b in enumerate(batches, start=1):
        agent.publish(T.host_metrics(HOST), dump(b))
        wait_until(
            lambda n=n: gw.get("/health").json()["metrics_applied"]["batches"] >= applied + n,
            timeout=20,
        )
    return batches


def history(gw: GatewayProc, query: str) -> dict[str, Any]:
    resp = gw.get(f"/vm/web/history?{query}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


@pytest.fixture
def gw(agent: Recorder, start_gateway: Callable[..., GatewayProc]) -> GatewayProc:
    gateway = start_gateway()
    wait_until(lambda: gateway.get("/vms").json()["count"] == 1, timeout=20)
    return gateway


def test_history_is_what_the_agent_published_across_a_restart(
    gw: GatewayProc, agent: Recorder, start_gateway: Callable[..., GatewayProc]
) -> None:
    batches = publish_ticks(agent, gw)
    want = [expected(b) for b in batches]
    body = wait_until(
        lambda: len((h := history(gw, "minutes=5"))["points"]) == TICKS and h, timeout=20
    )
    assert (body["resolution"], body["resolution_s"], body["count"]) == ("full", None, TICKS)
    assert [as_published(p) for p in body["points"]] == want

    # The 1-minute tier: each minute the average and the maximum of its published ticks.
    minutes = history(gw, "minutes=120")
    assert (minutes["resolution"], minutes["resolution_s"]) == ("1m", 60)
    by_minute: dict[str, list[dict[str, Any]]] = {}
    for w in want:
        by_minute.setdefault(w["ts"][:16], []).append(w)
    assert [p["ts"][:16] for p in minutes["points"]] == sorted(by_minute)
    for point in minutes["points"]:
        ticks = by_minute[point["ts"][:16]]
        cpus = [t["cpu_percent"] for t in ticks if t["cpu_percent"] is not None]
        assert point["samples"] == len(ticks)
        if cpus:
            assert point["cpu_percent_max"] == max(cpus)
            assert point["cpu_percent"] == pytest.approx(
                sum(cpus) / len(cpus), abs=0.0051
            )  # 2 decimals
        else:  # a minute holding only the first tick, which has no CPU figure yet
            assert (point["cpu_percent"], point["cpu_percent_max"]) == (None, None)
        assert point["memory_used_mb_max"] == max(t["memory_used_mb"] for t in ticks)
        assert point["net_tx_bps_max"] == max(t["net_tx_bps"] for t in ticks)

    gw.stop()  # a clean stop writes the minute it was in
    fresh = start_gateway(tokens=gw.tokens)
    wait_until(lambda: fresh.get("/vms").json()["count"] == 1, timeout=20)
    after = history(fresh, "minutes=5")
    assert [as_published(p) for p in after["points"]] == want
    assert history(fresh, "minutes=120")["points"] == minutes["points"]


def test_points_bounds_the_answer_and_bad_queries_are_400(gw: GatewayProc, agent: Recorder) -> None:
    publish_ticks(agent, gw)
    wait_until(lambda: len(history(gw, "minutes=5")["points"]) == TICKS, timeout=20)
    few = history(gw, "minutes=5&points=4")
    assert 1 <= few["count"] <= 4 and few["resolution"] == "full"
    assert few["resolution_s"] == 75  # five minutes in four intervals
    assert sum(p["samples"] for p in few["points"]) == TICKS
    assert max(p["memory_used_mb_max"] for p in few["points"]) == 400 + TICKS - 1
    assert history(gw, f"minutes=5&points={TICKS}")["count"] == TICKS  # within: as they are
    assert history(gw, "minutes=43200&points=3")["count"] <= 3  # the longest window

    for query in (
        "minutes=abc",
        "minutes=0",
        "minutes=-5",
        "minutes=nan",
        "minutes=inf",
        "minutes=43201",
        "points=0",
        "points=-1",
        "points=1.5",
        "points=ten",
        "points=10001",
        "points=",
    ):
        resp = gw.get(f"/vm/web/history?{query}")
        assert resp.status_code == 400, (query, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "bad_request" and error["message"], query
    assert gw.get("/vm/nope/history?points=3").status_code == 404
    assert gw.get("/vm/web/history", token=None).status_code == 401


# -- unit (no I/O): the history in memory ----------------------------------------------------------


@pytest.mark.unit
def test_the_tail_ends_a_minute_when_the_next_begins_and_packs_nulls() -> None:
    tail = Tail()
    assert tail.add(batch(T0, [vm(0, T0, None, 0)]), T0) == []
    assert tail.add(batch(T0 + 58, [vm(0, T0 + 58, 7.5, 1)]), T0 + 58) == []
    closed = tail.add(batch(T0 + 60, [vm(0, T0 + 60, 1.0, 2)]), T0 + 60)
    assert [(key, m.minute, len(m)) for key, m in closed] == [((BATCH_HOST, uuid(0)), T0 // 60, 2)]
    summary = closed[0][1].summary()
    assert (summary.n, summary.avgs()[0], summary.maxs[0]) == (2, 7.5, 7.5)  # null not counted
    assert tail.counts() == (1, 1)
    tail.forget(closed)
    assert tail.counts() == (1, 0)
    assert [len(m) for m in tail.of((BATCH_HOST, uuid(0)))] == [1]
    assert [m.minute for _, m in tail.sweep(T0 // 60 + 2)] == [T0 // 60 + 1]


@pytest.mark.unit
def test_a_vm_keeps_one_tick_per_half_interval_and_none_from_the_future() -> None:
    """One host's credentials cannot grow the history beyond its tick rate: a VM listed twice
    in a batch, a replayed batch, batches faster than the stated interval (2 s here) each
    add nothing; a tick timed after its arrival is kept at its arrival time."""
    tail = Tail()
    tail.add(batch(T0, [vm(0, T0, 1.0, 0), vm(0, T0, 2.0, 0), vm(1, T0, 3.0, 0)]), T0)
    tail.add(batch(T0, [vm(0, T0, 4.0, 0)]), T0 + 0.1)  # replayed
    tail.add(batch(T0 + 0.5, [vm(0, T0 + 0.5, 5.0, 1)]), T0 + 0.5)  # faster than stated
    tail.add(batch(T0 + 2, [vm(0, T0 + 2, 6.0, 1)]), T0 + 2)  # the next real tick
    tail.add(batch(T0 + 2.2, [vm(0, T0 + 3600, 7.0, 2)]), T0 + 3)  # an hour ahead
    (minute,) = tail.of((BATCH_HOST, uuid(0)))
    assert [(round(t - T0, 3), v[0]) for t, v in minute.ticks()] == [(0, 1.0), (2, 6.0), (3, 7.0)]
    assert len(tail.of((BATCH_HOST, uuid(1)))[0]) == 1


@pytest.mark.unit
def test_at_most_keeps_the_average_and_the_maximum_of_each_interval() -> None:
    points = [Agg.of(T0 + s, [float(s), None, 1.0, 0.0, 0.0, 0.0, 0.0]) for s in range(100)]
    merged = at_most(points, 7, T0, T0 + 99)
    assert len(merged) <= 7
    assert sum(p.n for p in merged) == 100
    assert merged[-1].maxs[0] == 99.0 and merged[0].avgs()[1] is None
    assert at_most(points, 100, T0, T0 + 99) is points
    assert len(at_most(points, 1, T0, T0 + 99)) == 1
    ticks = [(T0 + s, (float(s), None, 1.0, 0.0, 0.0, 0.0, 0.0)) for s in range(100)]
    same = ticks_at_most(ticks, 7, T0, T0 + 99)
    assert [(p.t, p.n, p.sums, p.counts, p.maxs) for p in same] == [
        (p.t, p.n, p.sums, p.counts, p.maxs) for p in merged
    ]
