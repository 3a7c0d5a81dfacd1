"""`GET /metrics` of a live gateway fed by real agents on libvirt's test driver, read the way
Prometheus reads it: parsed by prometheus_client, counters that never go back between scrapes."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import DemoStack
from tests.support.agentctl import DEMO_A, DEMO_B
from tests.support.gateway import GatewayProc, wait_until
from tests.unit.test_gateway_prometheus import FAMILIES

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
