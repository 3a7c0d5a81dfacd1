"""Development mode as docker/README.md starts it: the stack comes up, `/health` answers, the VMs
of the host's libvirtd (reached by the agent's container through the mounted socket) are listed,
one defined by the test among them, a command through REST succeeds and a Socket.IO client sees
the VM's state change."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
import requests

from tests.container.conftest import BIND
from tests.support.containers import Stack
from tests.support.gateway import SioClient, wait_until
from tests.support.testdriver import TestDriverDaemon

pytestmark = [pytest.mark.container, pytest.mark.timeout(2400)]

URL = f"http://{BIND}:5000"
NEW_VM = """<domain type='test'><name>ct-defined</name>
<uuid>c0000000-0000-4000-8000-00000000c0de</uuid><memory unit='MiB'>256</memory>
<vcpu>1</vcpu><os><type>hvm</type></os></domain>"""


def token(stack: Stack) -> str:
    return stack.env["KVMSUP_API_TOKENS"].rsplit(":", 1)[1]


def get(stack: Stack, path: str) -> requests.Response:
    return requests.get(URL + path, headers={"Authorization": f"Bearer {token(stack)}"}, timeout=10)


def vms(stack: Stack) -> dict[str, Any]:
    response = get(stack, "/vms")
    response.raise_for_status()
    body = response.json()
    listed = body["vms"] if isinstance(body, dict) else body
    return {vm["name"]: vm for vm in listed}


@pytest.fixture(scope="module")
def defined_vm(dev_stack: Stack, host_libvirtd: TestDriverDaemon) -> Iterator[str]:
    """A VM defined on the host's libvirtd once the stack runs (shut off, as defined). The
    connection stays open: libvirtd drops the shared test driver's state with its last one."""
    conn = libvirt.open(f"test+unix:///default?socket={host_libvirtd.socket}")
    conn.defineXML(NEW_VM)
    yield "ct-defined"
    conn.close()


def test_the_stack_comes_up_and_lists_the_hosts_vms(dev_stack: Stack, defined_vm: str) -> None:
    def healthy() -> Any:
        body = get(dev_stack, "/health").json()
        return body if body["status"] == "healthy" and body["hosts_online"] == 1 else None

    try:
        health = wait_until(healthy, timeout=90, every=1)
    except AssertionError:
        raise AssertionError(dev_stack.logs("gateway") + dev_stack.logs("agent")) from None
    assert health["status"] == "healthy" and health["libvirt_connected"] is True
    assert "WARNING: kvmsup broker in DEVELOPMENT mode" in dev_stack.logs("broker")
    assert "test" in vms(dev_stack)  # the test driver's own VM

    # A VM defined on the host's libvirtd now appears too: the agent follows libvirt's events.
    found = wait_until(lambda: vms(dev_stack).get(defined_vm), timeout=30)
    assert found["host"] == "ct-host" and found["state"] == "stopped"


def test_a_rest_command_succeeds_and_socketio_sees_the_change(
    dev_stack: Stack, defined_vm: str
) -> None:
    assert wait_until(lambda: vms(dev_stack).get(defined_vm), timeout=90)["state"] == "stopped"
    sio = SioClient(URL, token(dev_stack))
    try:
        response = requests.post(
            URL + "/vm/ct-defined/start?wait=20",
            headers={"Authorization": f"Bearer {token(dev_stack)}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["status"] == "succeeded" and job["state"] == "running", job
        sio.wait_for(
            "vm_state", lambda d: d["name"] == "ct-defined" and d["state"] == "running", timeout=20
        )
    finally:
        sio.close()
