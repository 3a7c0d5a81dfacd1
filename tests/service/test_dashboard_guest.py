"""The dashboard shows what each VM's guest agent says (Debian's chromium, driven by
Playwright, as in test_dashboard_browser.py): addresses in the VM list, OS, hostname and a
usage bar per filesystem on the VM page, updated live by the `vm_guest` push.

libvirt's test driver has no guest agent, so once the lab-a agent has said so for `web-01`, the
test publishes what a Debian guest's agent would report, under lab-a's identity; the agent
publishes on change only, so it stands. `KVMSUP_SCREENSHOTS_DIR=docs/screenshots` also writes
the screenshots there."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Browser, Page, expect

from shared.guest import GuestAddress, GuestFilesystem, GuestInfo, GuestOs
from shared.messages import dump
from shared.topics import Topics
from tests.service.test_dashboard_browser import (  # noqa: F401 (fixtures)
    LAB_VMS,
    Fleet,
    browser,
    fleet,
    row,
    screens,
    sign_in,
)
from tests.support.broker import Broker
from tests.support.gateway import wait_until
from tests.support.mqtt import Recorder

pytestmark = [pytest.mark.service, pytest.mark.timeout(300)]

T = Topics()
WEB = LAB_VMS[0][1]
GIB = 1024**3


def debian(used_data: int) -> GuestInfo:
    return GuestInfo(
        host="lab-a",
        uuid=WEB,
        name="web-01",
        status="ok",
        address_source="agent",
        addresses=[
            GuestAddress(
                interface="enp1s0",
                hwaddr="52:54:00:6b:3c:01",
                family="ipv4",
                address="192.0.2.10",
                prefix=24,
            ),
            GuestAddress(interface="enp1s0", family="ipv6", address="2001:db8::10", prefix=64),
        ],
        os=GuestOs(
            id="debian",
            name="Debian GNU/Linux",
            pretty_name="Debian GNU/Linux 12 (bookworm)",
            version_id="12",
            kernel_release="6.1.0-27-amd64",
        ),
        hostname="web-01",
        timezone="UTC",
        users=1,
        filesystems=[
            GuestFilesystem(
                mountpoint="/", device="vda1", type="ext4", used_bytes=3 * GIB, total_bytes=8 * GIB
            ),
            GuestFilesystem(
                mountpoint="/var/lib/data",
                device="vdb",
                type="ext4",
                used_bytes=used_data,
                total_bytes=40 * GIB,
            ),
        ],
    )


def test_addresses_in_the_list_and_the_guest_on_the_vm_page(
    fleet: Fleet,  # noqa: F811
    broker: Broker,
    browser: Browser,  # noqa: F811
    screens: Callable[[Page, str], None],  # noqa: F811
) -> None:
    gw = fleet.gw
    # The agent's own word first (the test driver: no guest agent), then the guest's.
    wait_until(lambda: gw.get("/vm/web-01/guest").json()["status"] == "unavailable", timeout=20)
    agent = Recorder(broker.port)
    try:
        agent.publish(T.vm_guest("lab-a", WEB), dump(debian(30 * GIB)), retain=True)
        wait_until(lambda: gw.get("/vm/web-01/guest").json()["status"] == "ok")

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        watch = sign_in(page, gw, gw.tokens.operator)
        web_row = row(page, "lab-a", WEB)
        expect(web_row.locator(".vm-addr")).to_have_text("192.0.2.10, 2001:db8::10")
        expect(web_row.locator(".vm-name")).to_have_text("web-01")
        screens(page, "dashboard-guest-list")

        web_row.locator(".vm-name").click()
        guest = page.locator("#guest")
        expect(guest).to_have_attribute("data-status", "ok", timeout=10000)
        expect(guest).to_contain_text("Debian GNU/Linux 12 (bookworm)")
        expect(guest).to_contain_text("6.1.0-27-amd64")
        expect(guest.locator(".fs")).to_have_count(2)
        data = guest.locator('.fs[data-mountpoint="/var/lib/data"]')
        expect(data.locator("meter")).to_have_attribute("value", "75")
        expect(data.locator(".fs-used")).to_contain_text("30.0 GiB of 40.0 GiB (75.0 %)")
        expect(page.locator("#vm-page .chart canvas")).to_have_count(4, timeout=10000)

        # A change inside the guest reaches the open page without a reload.
        agent.publish(T.vm_guest("lab-a", WEB), dump(debian(37 * GIB)), retain=True)
        expect(data.locator(".fs-used")).to_contain_text("92.5 %", timeout=10000)
        screens(page, "dashboard-vm-guest")
        assert watch.errors == []
    finally:
        agent.close()
