"""The dashboard's snapshots panel in a real browser (Debian's chromium, Playwright): an
operator takes a snapshot, goes back to it and deletes it, each destructive step confirmed; a
viewer sees the list and no button."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.service.test_dashboard_browser import HOST_NETWORK_CHANGED
from tests.support.gateway import GatewayProc, wait_until
from tests.support.procs import Service
from tests.support.testdriver import TestDriverDaemon

pytestmark = [pytest.mark.service, pytest.mark.timeout(300)]

CHROMIUM = "/usr/bin/chromium"
VM = "c0000000-0000-4000-8000-000000000021"
VM_XML = (
    f"<domain type='test'><name>snap-vm</name><uuid>{VM}</uuid>"
    "<memory unit='MiB'>512</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices>"
    "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
    "<source file='/images/snap-vm.qcow2'/><target dev='vda' bus='virtio'/></disk>"
    "</devices></domain>"
)


@pytest.fixture
def gw(
    testdriver: TestDriverDaemon,
    start_agent: Callable[..., Service],
    start_gateway: Callable[..., GatewayProc],
) -> Iterator[GatewayProc]:
    uri = f"test+unix:///default?socket={testdriver.socket}"
    conn = libvirt.open(uri)
    conn.defineXML(VM_XML).create()
    start_agent("snap-host", uri)
    gateway = start_gateway()
    wait_until(lambda: gateway.get("/vm/snap-vm").status_code == 200 or None, 15)
    yield gateway
    conn.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium .deb on this machine")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield b
        b.close()


def open_vm_page(page: Page, gw: GatewayProc, token: str) -> list[str]:
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and HOST_NETWORK_CHANGED not in message.text:
            errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(gw.url + "/ui")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15000)
    page.goto(gw.url + f"/ui#/vm/snap-host/{VM}")
    expect(page.locator("#vm-snapshots")).to_contain_text("no snapshots", timeout=15000)
    return errors


def test_an_operator_takes_reverts_and_deletes_a_snapshot(
    gw: GatewayProc, browser: Browser
) -> None:
    page = browser.new_page()
    errors = open_vm_page(page, gw, gw.tokens.operator)
    page.fill("#snapshot-name", "before-upgrade")
    page.fill("#snapshot-description", "2.0 goes in")
    page.click(".snapshot-form button[type=submit]")
    item = page.locator('#vm-snapshots li[data-snapshot="before-upgrade"]')
    expect(item).to_be_visible(timeout=15000)  # from the vm_snapshots push
    expect(item).to_contain_text("2.0 goes in")
    expect(item).to_contain_text("with memory")
    expect(item.locator(".badge")).to_have_text("current")

    item.locator("[data-snapshot-action=revert]").click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-title")).to_have_text("Go back to before-upgrade?")
    page.click("#confirm-cancel")  # nothing is sent
    item.locator("[data-snapshot-action=revert]").click()
    page.click("#confirm-ok")

    def reverted() -> bool | None:
        jobs = gw.get("/jobs").json()["jobs"]
        done = [j for j in jobs if j["action"] == "snapshot_revert" and j["finished"]]
        return done[0]["status"] == "succeeded" if done else None

    assert wait_until(reverted, 15)
    assert len([j for j in gw.get("/jobs").json()["jobs"] if j["action"] == "snapshot_revert"]) == 1

    item.locator("[data-snapshot-action=delete]").click()
    page.click("#confirm-ok")
    expect(page.locator("#vm-snapshots")).to_contain_text("no snapshots", timeout=15000)
    assert errors == []


def test_a_viewer_sees_the_snapshots_and_no_button(gw: GatewayProc, browser: Browser) -> None:
    assert gw.post("/vm/snap-vm/snapshots", json={"name": "s1"}).json()["status"] == "succeeded"
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(gw.url + "/ui")
    page.fill("#token", gw.tokens.viewer)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15000)
    page.goto(gw.url + f"/ui#/vm/snap-host/{VM}")
    expect(page.locator('#vm-snapshots li[data-snapshot="s1"]')).to_be_visible(timeout=15000)
    expect(page.locator(".snapshot-form")).to_have_count(0)
    expect(page.locator("[data-snapshot-action]")).to_have_count(0)
    assert errors == []
