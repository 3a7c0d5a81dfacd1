"""`GET /vm/<name>/history` against a real gateway fed through a real Mosquitto: the points
are the metrics an agent published, before and after a gateway restart, at full resolution
and as minute averages and maxima; `points=` is honoured; bad queries get JSON 400s."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

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
