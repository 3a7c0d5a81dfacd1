"""`GET /metrics`: prometheus_client's exposition of the cache, parsed back by prometheus_client
and by a strict little parser of format 0.0.4 (unit); a live gateway fed by real agents on
libvirt's test driver, read the way Prometheus reads it: parsed by prometheus_client, counters
that never go back between scrapes (service)."""

from __future__ import annotations

import gzip
import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.state import StateCache
from gateway.web.collectors import GatewayFigures
from gateway.web.prometheus import registry
from shared.messages import (
    DiskIO,
    HostMetrics,
    HostStatus,
    MetricsBatch,
    NetIO,
    VmMetrics,
    VmState,
)
from tests.service.conftest import DemoStack
from tests.support.agentctl import DEMO_A, DEMO_B
from tests.support.gateway import GatewayProc, wait_until

pytestmark = pytest.mark.service
# The module's tests only read: they share one stack, its gateway named as a test's own is.
SHARED_GATEWAY_ID = "gw-test"


@pytest.fixture
def gateway(shared_stack: DemoStack) -> GatewayProc:
    return shared_stack.gateway


WEB = {"host": "demo-a", "uuid": DEMO_A["web-01"], "name": "web-01"}
# What Prometheus 2.x and 3.x send.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
    "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)

Series = tuple[str, frozenset[tuple[str, str]]]


def scrape(gw: GatewayProc) -> dict[str, Metric]:
    resp = gw.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(resp.text)}


def one(fams: dict[str, Metric], family: str, **labels: str) -> float | None:
    """The value of the one sample of `family` whose labels include `labels` (None: absent)."""
    found = [s.value for s in fams[family].samples if labels.items() <= s.labels.items()]
    assert len(found) <= 1, (family, labels, found)
    return found[0] if found else None


def counters(fams: dict[str, Metric]) -> dict[Series, float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in fams.values()
        if f.type == "counter"
        for s in f.samples
    }


def flowing(gw: GatewayProc) -> dict[str, Metric] | None:
    """A scrape once the agents' metrics have reached the gateway (web-01 measured twice)."""
    fams = scrape(gw)
    ready = one(fams, "kvmsup_vm_cpu_percent", **WEB) is not None
    return fams if ready and one(fams, "kvmsup_vm_cpu_time_seconds", **WEB) else None


def test_a_live_scrape_carries_every_family_with_its_type_and_labels(
    gateway: GatewayProc,
) -> None:
    fams: dict[str, Metric] = wait_until(lambda: flowing(gateway), timeout=30)
    assert {name: f.type for name, f in fams.items()} == FAMILIES

    # Hosts and the gateway itself.
    for host in ("demo-a", "demo-b"):
        assert one(fams, "kvmsup_host_up", host=host) == 1
        assert one(fams, "kvmsup_host_libvirt_connected", host=host) == 1
    assert one(fams, "kvmsup_host_cpus", host="demo-a") == 8
    assert one(fams, "kvmsup_gateway_mqtt_connected", gateway="gw-test") == 1
    assert one(fams, "kvmsup_gateway_jobs", status="succeeded") is not None

    # Every VM of both hosts, named exactly as libvirt names it (spaces, '#', '+', emoji).
    for host, vms in (("demo-a", DEMO_A), ("demo-b", DEMO_B)):
        for name, uuid in vms.items():
            vm = {"host": host, "uuid": uuid, "name": name}
            assert (
                sum(
                    s.value
                    for s in fams["kvmsup_vm_state"].samples
                    if vm.items() <= s.labels.items()
                )
                == 1
            )
    assert one(fams, "kvmsup_vm_state", **WEB, state="running") == 1
    off = {"host": "demo-a", "uuid": DEMO_A["shared-vm"], "name": "shared-vm"}
    assert one(fams, "kvmsup_vm_state", **off, state="stopped") == 1
    assert one(fams, "kvmsup_vm_vcpus", **WEB) == 2
    assert one(fams, "kvmsup_vm_memory_bytes", **WEB) == 2048 * 1024 * 1024

    # The cumulative counters of a running VM, per device and interface.
    assert (one(fams, "kvmsup_vm_cpu_time_seconds", **WEB) or 0) > 0
    disk = {**WEB, "device": "vda"}
    nic = {**WEB, "interface": "tap-web01"}
    for family in (
        "kvmsup_vm_block_read_bytes",
        "kvmsup_vm_block_write_bytes",
        "kvmsup_vm_block_read_requests",
        "kvmsup_vm_block_write_requests",
    ):
        assert one(fams, family, **disk) is not None, family
    for family in (
        "kvmsup_vm_interface_receive_bytes",
        "kvmsup_vm_interface_transmit_bytes",
        "kvmsup_vm_interface_receive_packets",
        "kvmsup_vm_interface_transmit_packets",
        "kvmsup_vm_interface_receive_errors",
        "kvmsup_vm_interface_transmit_drops",
    ):
        assert one(fams, family, **nic) is not None, family
    # A stopped VM has no CPU time and no devices to count: nothing is made up for it.
    assert one(fams, "kvmsup_vm_cpu_time_seconds", **off) is None
    assert not [
        s for s in fams["kvmsup_vm_block_read_bytes"].samples if s.labels["uuid"] == off["uuid"]
    ]
    # Every VM series carries host, uuid and name.
    for name, fam in fams.items():
        if name.startswith("kvmsup_vm_"):
            assert all({"host", "uuid", "name"} <= s.labels.keys() for s in fam.samples), name


def test_counters_never_go_back_between_scrapes(gateway: GatewayProc) -> None:
    first: dict[str, Metric] = wait_until(lambda: flowing(gateway), timeout=30)
    cpu = one(first, "kvmsup_vm_cpu_time_seconds", **WEB)
    assert cpu is not None
    # A later tick: web-01's CPU time has grown.
    second: dict[str, Metric] = wait_until(
        lambda: (
            (f := scrape(gateway))
            and (one(f, "kvmsup_vm_cpu_time_seconds", **WEB) or 0) > cpu
            and f
        ),
        timeout=30,
    )
    before, after = counters(first), counters(second)
    assert len(before) > 50
    went_back = {k: (v, after[k]) for k, v in before.items() if k in after and after[k] < v}
    assert went_back == {}
    grew = [k for k, v in before.items() if k in after and after[k] > v]
    assert any(name == "kvmsup_vm_block_read_bytes_total" for name, _ in grew), grew


def test_prometheus_negotiates_openmetrics_and_gzip(gateway: GatewayProc) -> None:
    wait_until(lambda: flowing(gateway), timeout=30)
    resp = gateway.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert resp.headers["Content-Encoding"] == "gzip"  # `requests` unpacked it for us
    fams: dict[str, Any] = {f.name: f for f in parse_om(resp.text)}
    assert fams["kvmsup_vm_cpu_time_seconds"].type == "counter"
    assert one(fams, "kvmsup_vm_cpu_time_seconds", **WEB) is not None


def test_metrics_need_a_token(gateway: GatewayProc) -> None:
    assert gateway.get("/metrics", token=None).status_code == 401
    assert gateway.get("/metrics", token="not-a-token").status_code == 401


# -- unit (no I/O): the exposition of a cache ------------------------------------------------------


UA = "a0000000-0000-4000-8000-000000000001"
UB = "a0000000-0000-4000-8000-000000000002"
ODD = 'we"ird\\name\nline 🎬 #1 (a+b)'
Sample = tuple[str, frozenset[tuple[str, str]], float]

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def parse(text: str) -> tuple[dict[str, str], list[Sample]]:
    """Families' types and every sample; fails on anything format 0.0.4 does not allow."""
    types: dict[str, str] = {}
    samples: list[Sample] = []
    closed: set[str] = set()
    current = ""
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types and kind in ("gauge", "counter", "histogram"), line
            types[name] = kind
            if current:
                closed.add(current)
            current = name
            continue
        m = NAME.match(line)
        assert m, line
        name, rest = m.group(), line[m.end() :]
        labels: list[tuple[str, str]] = []
        if rest.startswith("{"):
            i = 1
            while rest[i] != "}":
                lm = LABEL.match(rest, i)
                assert lm and rest[lm.end() : lm.end() + 2] == '="', line
                i, value = lm.end() + 2, ""
                while rest[i] != '"':
                    if rest[i] == "\\":
                        value += {"\\": "\\", '"': '"', "n": "\n"}[rest[i + 1]]
                        i += 2
                    else:
                        assert rest[i] != "\n"
                        value += rest[i]
                        i += 1
                labels.append((lm.group(), value))
                i += 1
                if rest[i] == ",":
                    i += 1
            rest = rest[i + 1 :]
        assert rest.startswith(" ") and " " not in rest[1:], line
        parts = ("_bucket", "_sum", "_count") if types.get(current) == "histogram" else ("",)
        assert name in {current + p for p in parts}, f"{name} is not its family's block"
        assert current not in closed
        samples.append((name, frozenset(labels), float(rest[1:])))
    return types, samples


def value(samples: list[Sample], metric: str, /, **labels: str) -> float:
    found = [v for n, ls, v in samples if n == metric and set(labels.items()) <= ls]
    assert len(found) == 1, (metric, labels, found)
    return found[0]


def vm(uuid: str, name: str, state: str = "running") -> VmState:
    return VmState(
        host="h1",
        uuid=uuid,
        name=name,
        state=state,
        reason="x",  # type: ignore[arg-type]
        is_active=state == "running",
        vcpus=2,
        memory_mb=1024,
        max_memory_mb=1024,
        autostart=False,
        persistent=True,
        seq=1,
    )


def cache() -> StateCache:
    c = StateCache()
    c.apply_host_status(HostStatus(host="h1", online=True, libvirt_connected=True))
    c.apply_host_status(HostStatus(host="h2", online=False))
    c.apply_vm_state(vm(UA, ODD))
    c.apply_vm_state(vm(UB, "idle", "stopped"))
    m = VmMetrics(
        host="h1",
        uuid=UA,
        name=ODD,
        state="running",
        cpu_percent=12.5,
        vcpus=2,
        memory_used_mb=512,
        cpu_time_s=81.25,
        disk_io=[
            DiskIO(
                device="vda",
                read_bytes=100,
                write_bytes=200,
                read_bps=1.5,
                read_reqs=3,
                write_reqs=4,
            )
        ],
        network_io=[
            NetIO(
                interface="vnet0",
                rx_bytes=7,
                tx_bytes=8,
                tx_bps=2.0,
                rx_packets=5,
                tx_packets=6,
                rx_errors=1,
                tx_drops=2,
            )
        ],
    )
    c.apply_metrics(
        MetricsBatch(
            host="h1",
            interval_s=1,
            tick=1,
            host_metrics=HostMetrics(
                cpu_percent=3.0, cpus=8, memory_total_mb=4096, vms_total=2, vms_running=1
            ),
            vms=[m],
        )
    )
    return c


FIGURES = GatewayFigures(
    gateway_id="gw",
    mqtt_connected=True,
    job_counts={"succeeded": 3},
    jobs_in_flight=1,
    dropped={"not_json": 7, "identity": 0},
    job_revisions={("timed_out", "succeeded"): 2},
    auth_failures={("rest", "unknown"): 4},
)

# Every family a scrape of the cache above carries, with its type: cumulative values are counters
# (named `…_total` on the wire), the rest gauges.
FAMILIES = {
    "kvmsup_gateway_mqtt_connected": "gauge",
    "kvmsup_gateway_jobs": "counter",
    "kvmsup_gateway_jobs_revised": "counter",
    "kvmsup_gateway_jobs_in_flight": "gauge",
    "kvmsup_gateway_messages_dropped": "counter",
    "kvmsup_gateway_metrics_batches_late": "counter",
    "kvmsup_gateway_vm_metrics_late": "counter",
    "kvmsup_gateway_auth_failures": "counter",
    "kvmsup_host_up": "gauge",
    "kvmsup_host_libvirt_connected": "gauge",
    "kvmsup_host_cpu_percent": "gauge",
    "kvmsup_host_cpus": "gauge",
    "kvmsup_host_memory_bytes": "gauge",
    "kvmsup_host_memory_free_bytes": "gauge",
    "kvmsup_host_vms": "gauge",
    "kvmsup_host_vms_running": "gauge",
    "kvmsup_vm_state": "gauge",
    "kvmsup_vm_vcpus": "gauge",
    "kvmsup_vm_memory_bytes": "gauge",
    "kvmsup_vm_maximum_memory_bytes": "gauge",
    "kvmsup_vm_metrics_stale": "gauge",
    "kvmsup_vm_cpu_percent": "gauge",
    "kvmsup_vm_cpu_time_seconds": "counter",
    "kvmsup_vm_memory_used_bytes": "gauge",
    "kvmsup_vm_block_read_bytes": "counter",
    "kvmsup_vm_block_write_bytes": "counter",
    "kvmsup_vm_block_read_requests": "counter",
    "kvmsup_vm_block_write_requests": "counter",
    "kvmsup_vm_block_read_bytes_per_second": "gauge",
    "kvmsup_vm_block_write_bytes_per_second": "gauge",
    "kvmsup_vm_interface_receive_bytes": "counter",
    "kvmsup_vm_interface_transmit_bytes": "counter",
    "kvmsup_vm_interface_receive_packets": "counter",
    "kvmsup_vm_interface_transmit_packets": "counter",
    "kvmsup_vm_interface_receive_errors": "counter",
    "kvmsup_vm_interface_transmit_errors": "counter",
    "kvmsup_vm_interface_receive_drops": "counter",
    "kvmsup_vm_interface_transmit_drops": "counter",
    "kvmsup_vm_interface_receive_bytes_per_second": "gauge",
    "kvmsup_vm_interface_transmit_bytes_per_second": "gauge",
    "kvmsup_gateway_loop_stalls": "counter",
    "kvmsup_gateway_loop_stall_seconds": "histogram",
    "kvmsup_vm_guest_agent_up": "gauge",
    "kvmsup_vm_filesystem_used_bytes": "gauge",
    "kvmsup_vm_filesystem_size_bytes": "gauge",
}


def scrape_cache(c: StateCache | None = None, figures: GatewayFigures = FIGURES) -> str:
    snap = (c or cache()).snapshot(with_metrics=True)
    return generate_latest(registry(snap, figures)).decode()


def families(text: str) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.mark.unit
def test_every_family_parses_with_prometheus_client_with_its_type_and_labels() -> None:
    fams = families(scrape_cache())
    assert {name: f.type for name, f in fams.items()} == FAMILIES
    for name, fam in fams.items():
        for sample in fam.samples:
            # Counters carry `_total` on the wire, histograms their three series, and
            # nothing else a suffix.
            wire = {
                "counter": {f"{name}_total"},
                "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"},
            }.get(fam.type, {name})
            assert sample.name in wire
            keys = set(sample.labels)
            if name.startswith("kvmsup_vm_"):
                assert {"host", "uuid", "name"} <= keys, sample
            if "_block_" in name:
                assert "device" in keys
            if "_interface_" in name:
                assert "interface" in keys
            if name.startswith("kvmsup_host_"):
                assert keys == {"host"}


@pytest.mark.unit
def test_values_come_back_through_a_strict_0_0_4_parser() -> None:
    types, samples = parse(scrape_cache())
    assert types["kvmsup_gateway_jobs_revised_total"] == "counter"
    revised = {"guess": "timed_out", "status": "succeeded"}
    assert value(samples, "kvmsup_gateway_jobs_revised_total", **revised) == 2
    assert value(samples, "kvmsup_gateway_messages_dropped_total", reason="not_json") == 7
    assert value(samples, "kvmsup_gateway_messages_dropped_total", reason="identity") == 0
    assert value(samples, "kvmsup_gateway_mqtt_connected", gateway="gw") == 1
    assert value(samples, "kvmsup_gateway_jobs_total", status="succeeded") == 3
    assert value(samples, "kvmsup_gateway_jobs_total", status="failed") == 0
    assert value(samples, "kvmsup_gateway_jobs_in_flight") == 1
    auth = {"transport": "rest", "reason": "unknown"}
    assert value(samples, "kvmsup_gateway_auth_failures_total", **auth) == 4
    assert (
        value(samples, "kvmsup_gateway_auth_failures_total", transport="socketio", reason="unknown")
        == 0
    )
    assert value(samples, "kvmsup_host_up", host="h1") == 1
    assert value(samples, "kvmsup_host_up", host="h2") == 0
    assert value(samples, "kvmsup_host_libvirt_connected", host="h2") == 0
    assert value(samples, "kvmsup_host_memory_bytes", host="h1") == 4096 * 1024 * 1024
    assert value(samples, "kvmsup_host_vms_running", host="h1") == 1

    # The odd name comes back exactly: quote, backslash, newline, emoji, '#', '+'.
    odd = {"host": "h1", "uuid": UA, "name": ODD}
    assert value(samples, "kvmsup_vm_state", **odd, state="running") == 1
    assert value(samples, "kvmsup_vm_state", **odd, state="stopped") == 0
    assert value(samples, "kvmsup_vm_state", name="idle", state="stopped") == 1
    assert value(samples, "kvmsup_vm_cpu_percent", **odd) == 12.5
    assert value(samples, "kvmsup_vm_metrics_stale", **odd) == 0
    assert value(samples, "kvmsup_vm_vcpus", **odd) == 2
    assert value(samples, "kvmsup_vm_cpu_time_seconds_total", **odd) == 81.25
    assert value(samples, "kvmsup_vm_memory_used_bytes", **odd) == 512 * 1024 * 1024
    assert value(samples, "kvmsup_vm_maximum_memory_bytes", name="idle") == 1024 * 1024 * 1024
    assert value(samples, "kvmsup_vm_block_read_bytes_total", **odd, device="vda") == 100
    assert value(samples, "kvmsup_vm_block_write_bytes_total", device="vda") == 200
    assert value(samples, "kvmsup_vm_block_read_requests_total", device="vda") == 3
    assert value(samples, "kvmsup_vm_block_write_requests_total", device="vda") == 4
    assert value(samples, "kvmsup_vm_block_read_bytes_per_second", device="vda") == 1.5
    nic = {"interface": "vnet0"}
    assert value(samples, "kvmsup_vm_interface_transmit_bytes_per_second", **nic) == 2
    assert value(samples, "kvmsup_vm_interface_receive_bytes_total", **nic) == 7
    assert value(samples, "kvmsup_vm_interface_transmit_bytes_total", **nic) == 8
    assert value(samples, "kvmsup_vm_interface_receive_packets_total", **nic) == 5
    assert value(samples, "kvmsup_vm_interface_transmit_packets_total", **nic) == 6
    assert value(samples, "kvmsup_vm_interface_receive_errors_total", **nic) == 1
    assert value(samples, "kvmsup_vm_interface_transmit_drops_total", **nic) == 2
    # Unknown values are left out, never exported as 0.
    assert not [s for s in samples if s[0] == "kvmsup_vm_cpu_percent" and ("name", "idle") in s[1]]
    assert not [s for s in samples if s[0] == "kvmsup_vm_block_write_bytes_per_second"]
    assert not [s for s in samples if s[0] == "kvmsup_host_memory_free_bytes"]


@pytest.mark.unit
def test_an_older_agent_s_metrics_leave_the_newer_counters_out() -> None:
    """No CPU time, requests or packets in its payload: those series are absent, not 0."""
    c = StateCache()
    c.apply_host_status(HostStatus(host="h1", online=True, libvirt_connected=True))
    c.apply_vm_state(vm(UA, "old"))
    old = VmMetrics(
        host="h1",
        uuid=UA,
        name="old",
        state="running",
        vcpus=2,
        disk_io=[DiskIO(device="vda", read_bytes=1, write_bytes=2)],
        network_io=[NetIO(interface="vnet0", rx_bytes=3, tx_bytes=4)],
    )
    c.apply_metrics(
        MetricsBatch(host="h1", interval_s=1, tick=1, host_metrics=HostMetrics(), vms=[old])
    )
    fams = families(scrape_cache(c))
    for name in (
        "kvmsup_vm_cpu_time_seconds",
        "kvmsup_vm_block_read_requests",
        "kvmsup_vm_interface_receive_packets",
    ):
        assert fams[name].samples == [], name
    assert [s.value for s in fams["kvmsup_vm_block_read_bytes"].samples] == [1]


@pytest.mark.unit
def test_an_empty_gateway_still_exports_its_own_families() -> None:
    fams = families(
        scrape_cache(StateCache(), GatewayFigures(gateway_id="gw", mqtt_connected=False))
    )
    assert fams["kvmsup_gateway_mqtt_connected"].samples[0].value == 0
    assert len(fams["kvmsup_gateway_auth_failures"].samples) == 8  # 2 transports × 4 reasons
    assert fams["kvmsup_vm_state"].samples == []


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(started=False, api_tokens="v:viewer:viewer-secret")


@pytest.mark.unit
def test_route_needs_a_viewer_and_speaks_text_0_0_4(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    resp = client.get("/metrics", headers={"Authorization": "Bearer viewer-secret"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    _, samples = parse(resp.get_data(as_text=True))
    assert value(samples, "kvmsup_gateway_mqtt_connected", gateway="gw-unit") == 0


@pytest.mark.unit
def test_route_speaks_openmetrics_to_a_scraper_that_asks_for_it(app: Flask) -> None:
    headers = {
        "Authorization": "Bearer viewer-secret",
        # What Prometheus 2.x sends.
        "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    }
    resp = app.test_client().get("/metrics", headers=headers)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = resp.get_data(as_text=True)
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in parse_om(text)}
    assert fams["kvmsup_gateway_auth_failures"].type == "counter"
    assert fams["kvmsup_gateway_mqtt_connected"].samples[0].value == 0


@pytest.mark.unit
def test_route_gzips_for_a_scraper_that_accepts_it(app: Flask) -> None:
    client = app.test_client()
    auth = {"Authorization": "Bearer viewer-secret"}
    plain = client.get("/metrics", headers=auth)
    assert "Content-Encoding" not in plain.headers
    packed = client.get("/metrics", headers={**auth, "Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["Vary"]
    text = gzip.decompress(packed.get_data()).decode()
    assert families(text)["kvmsup_gateway_mqtt_connected"].type == "gauge"
    refused = client.get("/metrics", headers={**auth, "Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in refused.headers


ROOT = Path(__file__).resolve().parents[2]
EXPORTED = {f"{n}_total" if kind == "counter" else n for n, kind in FAMILIES.items()}


def _expand(name: str) -> set[str]:
    """`a_{b,c}_d_{e,f}` → the four names it abbreviates (as docs/API.md writes them)."""
    parts = re.split(r"\{([^}]*)\}", name)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return {"".join(combo) for combo in itertools.product(*choices)}


@pytest.mark.unit
def test_the_docs_name_exactly_the_series_that_are_exported() -> None:
    api = (ROOT / "docs" / "API.md").read_text()
    section = api[api.index("### `GET /metrics`") : api.index("## Socket.IO")]
    documented = set().union(*(_expand(n) for n in re.findall(r"`(kvmsup_[a-z_{},]+)`", section)))
    assert documented == EXPORTED


@pytest.mark.unit
def test_the_dashboard_and_the_scrape_config_fit_the_route() -> None:
    dash = json.loads((ROOT / "docs" / "prometheus" / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    queries += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    used = set(re.findall(r"kvmsup_[a-z_]+", " ".join(queries)))
    assert used and used <= EXPORTED, used - EXPORTED
    config = yaml.safe_load((ROOT / "docs" / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    # The route needs a viewer token.
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    interval = int(config["global"]["scrape_interval"].rstrip("s"))
    assert int(config["global"]["scrape_timeout"].rstrip("s")) < interval
