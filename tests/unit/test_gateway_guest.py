"""The gateway's side of `…/vm/<uuid>/guest`: decoded (or dropped) at ingest, kept per VM and
cleared with it, shown by `GET /vm/<name>`, `GET /vm/<name>/guest`, `GET /guests`, the
`vm_guest` push and `/metrics`. In-process: the cache is fed directly, no broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jsonschema_rs  # schemathesis's validator: the one the fuzz test checks with
import pytest
from flask import Flask
from prometheus_client import CollectorRegistry, generate_latest

from gateway.core import views
from gateway.core.ingest import Drop, GuestCleared, decode
from gateway.core.state import StateCache
from gateway.current import service_of
from gateway.web.collectors import FleetCollector
from shared.guest import GuestAddress, GuestFilesystem, GuestInfo, GuestOs
from shared.messages import HostStatus, dump
from shared.topics import Topics
from tests.support.gateway_app import U, with_web_vm
from tests.support.vm_states import vm_state

pytestmark = pytest.mark.unit

T = Topics("kvmsup")
VIEWER = {"Authorization": "Bearer viewer-secret"}
OTHER = "a0000000-0000-4000-8000-0000000000ff"


def guest(host: str = "h1", uuid: str = U, **extra: Any) -> GuestInfo:
    fields: dict[str, Any] = {
        "host": host,
        "uuid": uuid,
        "name": "web",
        "status": "ok",
        "address_source": "agent",
        "addresses": [
            GuestAddress(
                interface="eth0",
                hwaddr="52:54:00:00:00:01",
                family="ipv4",
                address="192.0.2.10",
                prefix=24,
            )
        ],
        "os": GuestOs(name="Debian GNU/Linux", version_id="12", kernel_release="6.1.0"),
        "hostname": "web",
        "filesystems": [
            GuestFilesystem(mountpoint="/", type="ext4", used_bytes=250, total_bytes=1000),
            GuestFilesystem(mountpoint="/data", type="ext2", used_bytes=None, total_bytes=0),
        ],
        **extra,
    }
    return GuestInfo(**fields)


def test_ingest_decodes_clears_and_drops_by_identity_and_bounds() -> None:
    topic = T.vm_guest("h1", U)
    assert isinstance(decode(T, "gw", topic, dump(guest())), GuestInfo)
    assert decode(T, "gw", topic, b"") == GuestCleared("h1", U)
    other = decode(T, "gw", T.vm_guest("h1", OTHER), dump(guest()))
    assert isinstance(other, Drop) and other.reason == "identity"
    wrong_host = decode(T, "gw", T.vm_guest("h2", U), dump(guest()))
    assert isinstance(wrong_host, Drop) and wrong_host.reason == "identity"
    body = json.loads(dump(guest()))
    body["filesystems"][0]["used_bytes"] = 2**64
    past = decode(T, "gw", topic, json.dumps(body).encode())
    assert isinstance(past, Drop) and past.reason == "out_of_range"


def test_kept_only_for_known_vms_newest_first_and_gone_with_the_vm() -> None:
    cache = StateCache()
    heard: list[tuple[str, object]] = []
    cache.listen(lambda kind, item: heard.append((kind, item)))
    assert not cache.apply_guest(guest())  # no state for it: nothing kept
    cache.apply_host_status(HostStatus(host="h1", online=True))
    cache.apply_vm_state(vm_state("h1", U))
    first = guest()
    assert cache.apply_guest(first)
    older = guest(hostname="old", ts=first.ts - timedelta(seconds=5))
    assert cache.apply_guest(older) and cache.guest_of(("h1", U)) == first
    assert [k for k, _ in heard if k == "vm_guest"] == ["vm_guest"]
    assert cache.snapshot().guests == {("h1", U): first}
    cache.remove_vm("h1", U)
    assert cache.guest_of(("h1", U)) is None
    cache.apply_vm_state(vm_state("h1", U))
    cache.apply_guest(guest())
    assert cache.clear_guest("h1", U) and cache.guest_of(("h1", U)) is None


def test_views_add_used_percent_and_say_unknown_before_any_message() -> None:
    vm = vm_state("h1", U, name="web")
    detail = views.guest_detail(vm, guest())
    assert detail["status"] == "ok" and detail["hostname"] == "web"
    assert [f["used_percent"] for f in detail["filesystems"]] == [25.0, None]
    assert detail["addresses"][0]["address"] == "192.0.2.10"
    assert "v" not in detail and detail["updated_at"].endswith("Z")
    unknown = views.guest_detail(vm, None)
    assert unknown["status"] == "unknown" and unknown["addresses"] == []
    assert set(unknown) == set(detail)
    assert views.guest_brief(None) is None


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return with_web_vm(make_app(started=False))


def _schema(app: Flask, name: str) -> Callable[[Any], None]:
    doc = app.test_client().get("/openapi.json").get_json()

    def check(body: Any) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
        jsonschema_rs.validate(schema, body)

    return check


def test_rest_routes_show_the_guest_in_the_documented_shapes(app: Flask) -> None:
    client = app.test_client()
    before = client.get("/vm/web", headers=VIEWER).get_json()
    assert before["guest"] is None and before["name"] == "web"  # the seed's fields stay
    assert client.get("/vm/web/guest", headers=VIEWER).get_json()["status"] == "unknown"

    service_of(app).handle(guest())
    detail = client.get("/vm/web", headers=VIEWER).get_json()
    brief = detail["guest"]
    assert brief["status"] == "ok" and brief["hostname"] == "web"
    assert brief["addresses"][0]["address"] == "192.0.2.10"
    assert brief["os"]["name"] == "Debian GNU/Linux"
    _schema(app, "VmDetail")(detail)
    full = client.get("/vm/web/guest", headers=VIEWER).get_json()
    assert full["filesystems"][0]["used_percent"] == 25.0
    _schema(app, "Guest")(full)
    listed = client.get("/guests", headers=VIEWER).get_json()
    assert listed["count"] == 1 and listed["guests"][0]["uuid"] == U
    _schema(app, "GuestList")(listed)
    assert client.get("/guests?host=h2", headers=VIEWER).get_json()["count"] == 0
    assert client.get("/vm/web/guest").status_code == 401

    service_of(app).handle(GuestCleared("h1", U))
    assert client.get("/vm/web", headers=VIEWER).get_json()["guest"] is None


def test_metrics_export_filesystems_by_mountpoint_once_each() -> None:
    cache = StateCache()
    cache.apply_host_status(HostStatus(host="h1", online=True))
    cache.apply_vm_state(vm_state("h1", U, name="web"))
    twice = [
        GuestFilesystem(mountpoint="/", used_bytes=250, total_bytes=1000),
        GuestFilesystem(mountpoint="/", used_bytes=1, total_bytes=2),
    ]
    cache.apply_guest(guest(filesystems=twice))
    registry = CollectorRegistry()
    registry.register(FleetCollector(cache.snapshot()))
    text = generate_latest(registry).decode()
    labels = f'host="h1",mountpoint="/",name="web",uuid="{U}"'
    assert f"kvmsup_vm_filesystem_used_bytes{{{labels}}} 250.0" in text
    assert f"kvmsup_vm_filesystem_size_bytes{{{labels}}} 1000.0" in text
    assert text.count("kvmsup_vm_filesystem_used_bytes{") == 1
    assert f'kvmsup_vm_guest_agent_up{{host="h1",name="web",uuid="{U}"}} 1.0' in text
