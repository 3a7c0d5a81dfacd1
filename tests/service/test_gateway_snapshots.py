"""Snapshots through a real gateway process: the REST routes as jobs with audit, the operator
role, the confirmation of a revert or a delete, the list it keeps per VM, its pushes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import libvirt
import pytest
import requests

from tests.support.gateway import GatewayProc, wait_until
from tests.support.procs import Service
from tests.support.testdriver import TestDriverDaemon

pytestmark = pytest.mark.service

VM = "c0000000-0000-4000-8000-000000000011"
RAW = "c0000000-0000-4000-8000-000000000013"


def _domain(name: str, uuid: str, fmt: str) -> str:
    return (
        f"<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>"
        "<memory unit='MiB'>512</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices>"
        f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
        f"<source file='/images/{name}.img'/><target dev='vda' bus='virtio'/></disk>"
        "</devices></domain>"
    )


@pytest.fixture
def fleet(
    testdriver: TestDriverDaemon,
    start_agent: Callable[..., Service],
    start_gateway: Callable[..., GatewayProc],
) -> Iterator[tuple[GatewayProc, libvirt.virConnect]]:
    uri = f"test+unix:///default?socket={testdriver.socket}"
    conn = libvirt.open(uri)
    conn.defineXML(_domain("snap-vm", VM, "qcow2")).create()
    conn.defineXML(_domain("raw-vm", RAW, "raw")).create()
    start_agent("snap-host", uri)
    gw = start_gateway()
    wait_until(lambda: gw.get("/vm/snap-vm").status_code == 200 or None, 15)
    yield gw, conn
    conn.close()


def _delete(gw: GatewayProc, path: str, **kw: Any) -> requests.Response:
    headers = gw.headers(gw.tokens.operator)
    return gw.http.delete(gw.url + path, headers=headers, timeout=30, **kw)


def _listed(gw: GatewayProc, names: list[str]) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body: dict[str, Any] = gw.get("/vm/snap-vm/snapshots").json()
        return body if [s["name"] for s in body["snapshots"]] == names else None

    found: dict[str, Any] = wait_until(check, 10)
    return found


def test_take_revert_and_delete_a_snapshot_as_audited_jobs(
    fleet: tuple[GatewayProc, libvirt.virConnect],
) -> None:
    gw, _conn = fleet
    empty = gw.get("/vm/snap-vm/snapshots")
    assert empty.status_code == 200
    assert (empty.json()["count"], empty.json()["snapshots"]) == (0, [])
    sio = gw.sio()
    try:
        taken = gw.post(
            "/vm/snap-vm/snapshots", json={"name": "pre-upgrade", "description": "before 2.0"}
        )
        assert taken.status_code == 200, taken.text
        job = taken.json()
        assert (job["status"], job["action"], job["success"]) == (
            "succeeded",
            "snapshot_create",
            True,
        )
        assert job["params"]["name"] == "pre-upgrade" and job["by"] == "bob"
        body = _listed(gw, ["pre-upgrade"])
        [snap] = body["snapshots"]
        assert (snap["description"], snap["state"], snap["has_memory"], snap["current"]) == (
            "before 2.0",
            "running",
            True,
            True,
        )
        pushed = sio.wait_for("vm_snapshots", lambda d: d["uuid"] == VM and d["snapshots"])
        assert pushed["snapshots"][0]["name"] == "pre-upgrade" and pushed["host"] == "snap-host"
        sio.wait_for("job_update", lambda d: d["id"] == job["id"] and d["finished"])
    finally:
        sio.close()

    no_confirm = gw.post("/vm/snap-vm/snapshots/pre-upgrade/revert", json={})
    assert no_confirm.status_code == 400
    assert no_confirm.json()["error"]["code"] == "confirmation_required"
    wrong = gw.post("/vm/snap-vm/snapshots/pre-upgrade/revert", json={"confirm": "raw-vm"})
    assert wrong.status_code == 409
    assert wrong.json()["error"]["code"] == "confirmation_mismatch"
    reverted = gw.post("/vm/snap-vm/snapshots/pre-upgrade/revert", json={"confirm": "snap-vm"})
    assert reverted.status_code == 200 and reverted.json()["status"] == "succeeded"
    assert reverted.json()["state"] == "running"

    assert _delete(gw, "/vm/snap-vm/snapshots/pre-upgrade").status_code == 400  # no confirm
    deleted = _delete(gw, "/vm/snap-vm/snapshots/pre-upgrade", json={"confirm": "snap-vm"})
    assert deleted.status_code == 200 and deleted.json()["status"] == "succeeded"
    _listed(gw, [])

    audit = gw.get("/audit", params={"vm": "snap-vm"}).json()["audit"]
    actions = [(a["action"], a["result"]) for a in audit]
    for done in ("snapshot_create", "snapshot_revert", "snapshot_delete"):
        assert (done, "succeeded") in actions, actions
    refusals = [a for a in audit if a["result"] != "succeeded"]
    assert len(refusals) >= 3  # the refused confirmations are audited too


def test_what_cannot_work_is_refused_and_who_may_ask(
    fleet: tuple[GatewayProc, libvirt.virConnect],
) -> None:
    gw, _conn = fleet
    viewer = gw.post("/vm/snap-vm/snapshots", token="viewer", json={"name": "s"})
    assert viewer.status_code == 403
    for bad in ({"name": "../x"}, {}, {"name": "s", "force": True}, {"name": "s", "memory": 1}):
        answer = gw.post("/vm/snap-vm/snapshots", json=bad)
        assert answer.status_code == 400, (bad, answer.text)
    form = gw.post(
        "/vm/snap-vm/snapshots",
        data="name=s",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    raw = gw.post("/vm/raw-vm/snapshots", json={"name": "s"})
    assert raw.status_code == 200 and raw.json()["status"] == "failed"
    assert raw.json()["error"]["code"] == "snapshot_raw_disk"
    missing = gw.post("/vm/snap-vm/snapshots/nope/revert", json={"confirm": "snap-vm"})
    assert missing.json()["error"]["code"] == "snapshot_not_found"
    assert gw.get("/vm/nope/snapshots").status_code == 404


def test_a_vm_s_list_goes_with_the_vm(fleet: tuple[GatewayProc, libvirt.virConnect]) -> None:
    gw, conn = fleet
    assert gw.post("/vm/snap-vm/snapshots", json={"name": "s1"}).json()["status"] == "succeeded"
    _listed(gw, ["s1"])
    dom = conn.lookupByUUIDString(VM)
    dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    wait_until(lambda: gw.get("/vm/snap-vm/snapshots").status_code == 404 or None, 10)
    health = gw.get("/health").json()
    assert not health["messages_dropped"].get("bad_schema")  # the cleared list is no garbage
