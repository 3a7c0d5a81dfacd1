"""What each VM's guest agent says, through a real gateway process: retained `…/vm/<uuid>/guest`
messages on a real Mosquitto, read back from REST, Socket.IO (`vm_guest`) and `/metrics`; and
from real agents on libvirt's test driver (addresses, but no `guestInfo`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.guest import GuestAddress, GuestFilesystem, GuestInfo, GuestOs
from shared.messages import HostStatus, dump
from shared.topics import Topics
from tests.support.broker import Broker
from tests.support.gateway import GatewayProc, wait_until
from tests.support.mqtt import Recorder
from tests.support.vm_states import vm_state

pytestmark = pytest.mark.service

T = Topics("kvmsup")
HOST = "host-g"
UA = "a0000000-0000-4000-8000-0000000000a9"


def guest(hostname: str, used: int) -> GuestInfo:
    return GuestInfo(
        host=HOST,
        uuid=UA,
        name="web",
        status="ok",
        address_source="agent",
        addresses=[
            GuestAddress(interface="eth0", family="ipv4", address="192.0.2.10", prefix=24),
            GuestAddress(interface="eth0", family="ipv6", address="2001:db8::10", prefix=64),
        ],
        os=GuestOs(name="Debian GNU/Linux", pretty_name="Debian GNU/Linux 12 (bookworm)"),
        hostname=hostname,
        filesystems=[
            GuestFilesystem(mountpoint="/", type="ext4", used_bytes=used, total_bytes=4000),
            GuestFilesystem(mountpoint="/srv data", type="ext2", used_bytes=1, total_bytes=8),
        ],
    )


def test_guest_data_on_every_gateway_surface(
    broker: Broker, start_gateway: Callable[..., GatewayProc]
) -> None:
    agent = Recorder(broker.port)
    try:
        status = HostStatus(host=HOST, online=True, libvirt_connected=True)
        agent.publish(T.host_status(HOST), dump(status), retain=True)
        agent.publish(T.vm_state(HOST, UA), dump(vm_state(HOST, UA, "web")), retain=True)
        agent.publish(T.vm_guest(HOST, UA), dump(guest("web-1", 1000)), retain=True)
        gw = start_gateway()  # after the messages: it learns them from the retained copies

        def guest_of_web() -> dict[str, Any] | None:
            resp = gw.get("/vm/web")
            body: dict[str, Any] | None = resp.json() if resp.status_code == 200 else None
            return body if body and body["guest"] else None

        detail = wait_until(guest_of_web)
        assert detail["state"] == "running" and detail["uuid"] == UA
        brief = detail["guest"]
        assert [a["address"] for a in brief["addresses"]] == ["192.0.2.10", "2001:db8::10"]
        assert (brief["hostname"], brief["os"]["name"]) == ("web-1", "Debian GNU/Linux")
        full = gw.get("/vm/web/guest").json()
        assert [(f["mountpoint"], f["used_percent"]) for f in full["filesystems"]] == [
            ("/", 25.0),
            ("/srv data", 12.5),
        ]
        assert gw.get("/guests").json()["guests"][0]["addresses"][0]["address"] == "192.0.2.10"
        text = gw.get("/metrics").text
        labels = f'host="{HOST}",mountpoint="/srv data",name="web",uuid="{UA}"'
        assert f"kvmsup_vm_filesystem_used_bytes{{{labels}}} 1.0" in text
        assert f"kvmsup_vm_filesystem_size_bytes{{{labels}}} 8.0" in text

        # A change is pushed to Socket.IO clients as `vm_guest`, in the shape of the route.
        sio = gw.sio()
        try:
            agent.publish(T.vm_guest(HOST, UA), dump(guest("web-2", 2000)), retain=True)
            pushed = sio.wait_for("vm_guest", lambda d: d["hostname"] == "web-2")
            assert pushed["uuid"] == UA and pushed["filesystems"][0]["used_percent"] == 50.0
            assert set(pushed) == set(full)
        finally:
            sio.close()

        # Cleared (the VM undefined): nothing of its guest is left, in REST or /metrics.
        agent.publish(T.vm_guest(HOST, UA), b"", retain=True)
        wait_until(lambda: gw.get("/vm/web").json()["guest"] is None)
        assert gw.get("/vm/web/guest").json()["status"] == "unknown"
        assert "kvmsup_vm_filesystem_used_bytes{" not in gw.get("/metrics").text
    finally:
        agent.close()


def test_agents_on_the_test_driver_give_addresses_but_no_guest_agent(
    gateway: GatewayProc,
) -> None:
    def read() -> dict[str, Any] | None:
        body: dict[str, Any] = gateway.get("/vm/web-01/guest").json()
        return body if body["status"] != "unknown" else None

    body = wait_until(read, timeout=15)
    # The test driver answers interfaceAddresses (one fixed address per NIC), not guestInfo.
    assert body["status"] == "unavailable" and "not supported" in body["reason"]
    assert body["address_source"] == "agent" and body["addresses"]
    assert body["addresses"][0]["family"] == "ipv4"
    stopped = wait_until(
        lambda: gateway.get("/vm/shared-vm/guest?host=demo-a").json()["reason"], timeout=15
    )
    assert stopped == "the VM is not running"
