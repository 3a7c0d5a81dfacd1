"""`GET /metrics`: the exposition text parsed back by a strict little parser of format 0.0.4."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask

from gateway.prometheus import collect, escape_label, render
from gateway.state import StateCache
from shared.messages import (
    DiskIO,
    HostMetrics,
    HostStatus,
    MetricsBatch,
    NetIO,
    VmMetrics,
    VmState,
)

pytestmark = pytest.mark.unit

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
            assert name not in types and kind in ("gauge", "counter"), line
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
        assert name == current and name not in closed, f"{name} is not its family's block"
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
        disk_io=[DiskIO(device="vda", read_bytes=100, write_bytes=200, read_bps=1.5)],
        network_io=[NetIO(interface="vnet0", rx_bytes=7, tx_bytes=8, tx_bps=2.0)],
    )
    c.apply_metrics(
        MetricsBatch(
            host="h1", interval_s=1, tick=1, host_metrics=HostMetrics(cpu_percent=3.0), vms=[m]
        )
    )
    return c


def test_exposition_round_trips_through_a_strict_parser() -> None:
    text = render(
        collect(
            cache().snapshot(with_metrics=True),
            gateway_id="gw",
            mqtt_connected=True,
            job_counts={"succeeded": 3},
            jobs_in_flight=1,
            dropped={"not_json": 7, "identity": 0},
            job_revisions={("timed_out", "succeeded"): 2},
        )
    )
    types, samples = parse(text)
    assert types["kvmsup_gateway_jobs_revised_total"] == "counter"
    revised = {"guess": "timed_out", "status": "succeeded"}
    assert value(samples, "kvmsup_gateway_jobs_revised_total", **revised) == 2
    assert types["kvmsup_gateway_messages_dropped_total"] == "counter"
    assert value(samples, "kvmsup_gateway_messages_dropped_total", reason="not_json") == 7
    assert value(samples, "kvmsup_gateway_messages_dropped_total", reason="identity") == 0
    assert types["kvmsup_vm_disk_read_bytes_total"] == "counter"
    assert types["kvmsup_vm_cpu_percent"] == "gauge"
    assert value(samples, "kvmsup_gateway_mqtt_connected") == 1
    assert value(samples, "kvmsup_gateway_jobs_total", status="succeeded") == 3
    assert value(samples, "kvmsup_gateway_jobs_total", status="failed") == 0
    assert value(samples, "kvmsup_gateway_jobs_in_flight") == 1
    assert value(samples, "kvmsup_host_up", host="h1") == 1
    assert value(samples, "kvmsup_host_up", host="h2") == 0
    assert value(samples, "kvmsup_host_libvirt_connected", host="h2") == 0

    # The odd name comes back exactly: quote, backslash, newline, emoji, '#', '+'.
    odd = {"host": "h1", "uuid": UA, "name": ODD}
    assert value(samples, "kvmsup_vm_state", **odd, state="running") == 1
    assert value(samples, "kvmsup_vm_state", **odd, state="stopped") == 0
    assert value(samples, "kvmsup_vm_state", name="idle", state="stopped") == 1
    assert value(samples, "kvmsup_vm_cpu_percent", **odd) == 12.5
    assert value(samples, "kvmsup_vm_memory_used_bytes", **odd) == 512 * 1024 * 1024
    assert value(samples, "kvmsup_vm_disk_read_bytes_total", **odd, device="vda") == 100
    assert value(samples, "kvmsup_vm_disk_written_bytes_total", device="vda") == 200
    assert value(samples, "kvmsup_vm_disk_read_bytes_per_second", device="vda") == 1.5
    assert value(samples, "kvmsup_vm_network_transmit_bytes_per_second", interface="vnet0") == 2
    assert value(samples, "kvmsup_vm_network_receive_bytes_total", interface="vnet0") == 7
    # Unknown values are left out, never exported as 0.
    assert not [s for s in samples if s[0] == "kvmsup_vm_cpu_percent" and ("name", "idle") in s[1]]
    assert not [s for s in samples if s[0] == "kvmsup_vm_disk_written_bytes_per_second"]


def test_escape_label_covers_exactly_three_characters() -> None:
    assert escape_label('a\\b"c\nd #+🎬') == 'a\\\\b\\"c\\nd #+🎬'


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(api_tokens="v:viewer:viewer-secret")


def test_route_needs_a_viewer_and_speaks_text_0_0_4(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    resp = client.get("/metrics", headers={"Authorization": "Bearer viewer-secret"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    _, samples = parse(resp.get_data(as_text=True))
    assert value(samples, "kvmsup_gateway_mqtt_connected", gateway="gw-unit") == 0
