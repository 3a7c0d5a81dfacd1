"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a demo-like
stack: a real Mosquitto, the gateway process, and two agents — `lab-a` on libvirt's test driver
behind a private libvirtd (so this test changes its VMs behind the product's back, through
libvirt), `demo-b` on the demo node file.

`KVMSUP_SCREENSHOTS_DIR=docs/screenshots` also writes the screenshots there (the README's);
otherwise they go to the test's temporary directory only, so a test run leaves the checkout
clean."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from shared.topics import Topics
from tests.service.conftest import wait_ready
from tests.support.broker import Broker
from tests.support.gateway import GatewayProc, wait_until
from tests.support.mqtt import Recorder
from tests.support.procs import Service, demo_node_uri
from tests.support.testdriver import TestDriverDaemon

pytestmark = [pytest.mark.service, pytest.mark.timeout(300)]

# Debian's package. Ubuntu ships chromium only as a snap, which `make install` does not install
# (see the Makefile's BROWSER): there, and only there, the browser test is skipped.
CHROMIUM = "/usr/bin/chromium"


def _ubuntu() -> bool:
    try:
        return "\nID=ubuntu\n" in "\n" + Path("/etc/os-release").read_text()
    except OSError:
        return False


ROOT = Path(__file__).resolve().parents[2]
VM_XML = """<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>
<memory unit='MiB'>{mem}</memory><vcpu>{cpus}</vcpu><os><type>hvm</type></os></domain>"""
# Beside the test driver's own `test` VM (running) on lab-a.
LAB_VMS = [
    ("web-01", "c0000000-0000-4000-8000-000000000001", 2048, 2, True),
    ("db-01", "c0000000-0000-4000-8000-000000000002", 4096, 4, True),
    ("build box #2", "c0000000-0000-4000-8000-000000000003", 1024, 1, False),
]
FLEET_VMS = 4 + 3  # lab-a: test + LAB_VMS; demo-b: shared-vm, media 🎬 box, backup


@dataclass
class Fleet:
    gw: GatewayProc
    conn: libvirt.virConnect
    agents: dict[str, Service]
    libvirtd: TestDriverDaemon


@pytest.fixture
def fleet(
    testdriver: TestDriverDaemon,
    start_agent: Callable[..., Service],
    start_gateway: Callable[..., GatewayProc],
) -> Iterator[Fleet]:
    uri = f"test+unix:///default?socket={testdriver.socket}"
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open(uri)
    for name, uuid, mem, cpus, running in LAB_VMS:
        dom = conn.defineXML(VM_XML.format(name=name, uuid=uuid, mem=mem, cpus=cpus))
        if running:
            dom.create()
    agents = {"lab-a": start_agent("lab-a", uri)}
    agents["demo-b"] = start_agent("demo-b", demo_node_uri("demo-b"))
    gw = start_gateway()
    wait_ready(gw, vms=FLEET_VMS, timeout=30)
    try:
        yield Fleet(gw, conn, agents, testdriver)
    finally:
        conn.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        if _ubuntu():
            pytest.skip("Ubuntu has no chromium .deb (only a snap); the test needs Debian's")
        pytest.fail("chromium is not installed: `make install` as root installs APT_PACKAGES")
    # Chromium refuses to start its sandbox as root (containers, CI runners): only then is it
    # turned off, for this test's own headless browser that only ever opens the local gateway.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield b
        b.close()


@pytest.fixture
def screens(tmp_path: Path) -> Iterator[Callable[[Page, str], None]]:
    made: list[Path] = []
    out = tmp_path / "screenshots"
    out.mkdir()

    def shoot(page: Page, name: str) -> None:
        path = out / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        made.append(path)

    yield shoot
    for path in made:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    target = os.environ.get("KVMSUP_SCREENSHOTS_DIR")
    if target:
        dest = ROOT / target if not Path(target).is_absolute() else Path(target)
        dest.mkdir(parents=True, exist_ok=True)
        for path in made:
            shutil.copy(path, dest / path.name)


# Chromium aborts the requests in flight when the host's network changes, and says so on the
# console. The suite's other tiers change it while this test runs (the container tier's Docker
# bridges, the e2e tier's taps): the host's doing, not the page's; the page's own checks say
# whether it recovered.
HOST_NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"


class Watch:
    """Every console error and uncaught exception of a page: a refused script or style (the
    CSP) and a broken module both end up here, and fail the test."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _console(self, message: Any) -> None:
        if message.type == "error" and HOST_NETWORK_CHANGED not in message.text:
            self.errors.append(message.text)


def sign_in(page: Page, gw: GatewayProc, token: str) -> Watch:
    watch = Watch(page)
    page.goto(gw.url + "/ui")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15000)
    return watch


def row(page: Page, host: str, uuid: str) -> Any:
    return page.locator(f'.vm-row[data-key="{host}/{uuid}"]')


def expect_fleet(page: Page, gw: GatewayProc) -> list[dict[str, Any]]:
    """Every VM of both hosts is listed, with the state the API gives."""
    vms: list[dict[str, Any]] = gw.get("/vms").json()["vms"]
    assert len(vms) == FLEET_VMS and {v["host"] for v in vms} == {"lab-a", "demo-b"}
    expect(page.locator(".vm-row[data-key]")).to_have_count(FLEET_VMS, timeout=15000)
    for vm in vms:
        r = row(page, vm["host"], vm["uuid"])
        expect(r).to_have_attribute("data-state", vm["state"])
        expect(r.locator(".vm-name")).to_have_text(vm["name"])
        expect(r.locator(".state")).to_have_text(vm["state"])
    for host in ("lab-a", "demo-b"):
        card = page.locator(f'.host[data-host="{host}"]')
        expect(card).to_have_attribute("data-online", "true")
        expect(card.locator(".host-status")).to_have_text("online")
    return vms


def test_operator_sees_the_fleet_live_and_acts_with_a_confirmation(
    fleet: Fleet,
    browser: Browser,
    screens: Callable[[Page, str], None],
) -> None:
    gw, conn = fleet.gw, fleet.conn
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    watch = sign_in(page, gw, gw.tokens.operator)
    expect(page.locator("#who")).to_have_text("bob · operator")
    vms = expect_fleet(page, gw)
    assert page.locator(".vm-row button.act").count() > 0  # an operator has actions

    # Behind the product's back: paused through libvirt itself, on the agent's own libvirtd.
    web = next(v for v in vms if v["name"] == "web-01")
    page.evaluate("window.__sameDocument = true")
    conn.lookupByName("web-01").suspend()
    suspended = time.monotonic()
    expect(row(page, "lab-a", web["uuid"])).to_have_attribute("data-state", "paused", timeout=10000)
    print(f"paused on the page {1000 * (time.monotonic() - suspended):.0f} ms after libvirt's call")
    assert page.evaluate("window.__sameDocument === true")  # live, not reloaded

    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))

    # A destructive action asks first; cancelled, nothing is sent.
    web_row = row(page, "lab-a", web["uuid"])
    web_row.locator("button[data-action=force_off]").click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-title")).to_have_text("Force off web-01?")
    page.click("#confirm-cancel")
    expect(page.locator("#confirm")).to_be_hidden()
    time.sleep(0.5)
    assert posts == [] and gw.get("/jobs").json()["total"] == 0

    # Confirmed: the VM goes off for real, and the job's outcome is shown.
    web_row.locator("button[data-action=force_off]").click()
    page.click("#confirm-ok")
    expect(web_row).to_have_attribute("data-state", "stopped", timeout=15000)
    assert conn.lookupByName("web-01").state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    done = page.locator("#jobs li.job[data-status=succeeded]")
    expect(done).to_have_count(1, timeout=10000)
    expect(done).to_contain_text("bob · destroy web-01 @lab-a")
    expect(page.locator(".toast.succeeded")).to_contain_text("destroy web-01 succeeded")
    assert len(posts) == 1 and "/stop" in posts[0]

    # A start needs no confirmation.
    web_row.locator("button[data-action=start]").click()
    expect(web_row).to_have_attribute("data-state", "running", timeout=15000)
    wait_until(lambda: conn.lookupByName("web-01").isActive(), timeout=5)
    expect(page.locator("#audit li.audit")).to_have_count(2, timeout=10000)
    expect(page.locator("#events li.event").first).to_be_visible()
    # Sparklines fill from the pushed ticks.
    wait_until(lambda: page.locator(".vm-row .spark polyline").count() > 0, timeout=15)
    time.sleep(3)  # a few more ticks on the sparklines, for the screenshot
    screens(page, "dashboard-desktop")

    # The VM page: its graphs over the last hour, then the day.
    page.click(f'.vm-row[data-key="lab-a/{web["uuid"]}"] .vm-name')
    expect(page.locator("#vm-page")).to_be_visible()
    expect(page.locator("#vm-head h1")).to_contain_text("web-01")
    expect(page.locator("#vm-page .chart canvas")).to_have_count(4, timeout=10000)
    expect(page.locator("#range-note")).to_contain_text("points")
    expect(page.locator("#vm-jobs li.job")).to_have_count(2)
    time.sleep(1.5)  # a few more live points on the graphs
    screens(page, "dashboard-vm-desktop")
    page.click("[data-range='1440']")
    expect(page.locator("[data-range='1440']")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#vm-page .chart canvas")).to_have_count(4)
    page.go_back()
    expect(page.locator("#overview")).to_be_visible()
    assert page.evaluate("window.__sameDocument === true")

    # A phone: the same page, one column.
    phone = browser.new_page(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    phone_watch = sign_in(phone, gw, gw.tokens.operator)
    expect(phone.locator(".vm-row[data-key]")).to_have_count(FLEET_VMS, timeout=15000)
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width}px wide on a 390px screen"
    wait_until(lambda: phone.locator(".vm-row .spark polyline").count() > 0, timeout=15)
    screens(phone, "dashboard-phone")
    phone.click(f'.vm-row[data-key="lab-a/{web["uuid"]}"] .vm-name')
    expect(phone.locator("#vm-page .chart canvas")).to_have_count(4, timeout=10000)
    screens(phone, "dashboard-vm-phone")

    assert watch.errors == [] and phone_watch.errors == []


def test_a_viewer_sees_no_action_buttons_and_stays_signed_in(
    fleet: Fleet, browser: Browser
) -> None:
    gw, conn = fleet.gw, fleet.conn
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = sign_in(page, gw, gw.tokens.viewer)
    expect(page.locator("#who")).to_have_text("alice · viewer")
    vms = expect_fleet(page, gw)
    assert page.locator("button.act, .actions").count() == 0

    # Live without polling: while nothing changes, the page sends no request at all, yet the
    # metrics pushed each tick keep coming. The test driver's CPU figure is steady (its guests
    # spend wall-clock time on every vCPU, so 100 % ÷ vCPUs), so the test changes it through
    # libvirt: web-01 left with one of its two vCPUs goes from 50 % to 100 %. Only a metrics
    # push carries the new figure; a state push re-renders the row with the last one.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    time.sleep(3)
    assert requests == []
    web = next(v for v in vms if v["name"] == "web-01")
    web_cpu = row(page, "lab-a", web["uuid"]).locator(".spark-cell.cpu .spark-value")
    # Around 50 and 100: a tick read late by the agent (a busy machine) is off by a few %.
    expect(web_cpu).to_have_text(re.compile(r"^(4[0-9]|5[0-9])\.\d %$"))
    conn.lookupByName("web-01").setVcpusFlags(1, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    expect(web_cpu).to_have_text(re.compile(r"^(9[0-9]|100)\.\d %$"), timeout=10000)

    # Still none after a state change re-renders a row, nor on a VM page.
    db = next(v for v in vms if v["name"] == "db-01")
    conn.lookupByName("db-01").suspend()
    expect(row(page, "lab-a", db["uuid"])).to_have_attribute("data-state", "paused", timeout=10000)
    assert page.locator("button.act, .actions").count() == 0
    page.click(f'.vm-row[data-key="lab-a/{db["uuid"]}"] .vm-name')
    expect(page.locator("#vm-page .chart canvas")).to_have_count(4, timeout=10000)
    assert page.locator("button.act, .actions").count() == 0
    page.go_back()

    # A host whose agent stops turns offline on the page; its VMs stay listed, marked.
    fleet.agents["demo-b"].stop()
    card = page.locator('.host[data-host="demo-b"]')
    expect(card).to_have_attribute("data-online", "false", timeout=10000)
    expect(card.locator(".host-status")).to_have_text("offline")
    expect(page.locator(".vm-row[data-host=demo-b] .badge")).to_have_count(3)
    expect(page.locator(".vm-row[data-key]")).to_have_count(FLEET_VMS)
    # A host whose libvirtd goes away stays online, with libvirt disconnected.
    fleet.libvirtd.stop()
    lab = page.locator('.host[data-host="lab-a"]')
    expect(lab).to_have_attribute("data-libvirt", "disconnected", timeout=15000)
    expect(lab).to_have_attribute("data-online", "true")

    # The token was entered once: a reload keeps it (localStorage), no sign-in again; a link
    # to a VM's page opens it directly.
    page.goto(gw.url + f"/ui#/vm/lab-a/{db['uuid']}")
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15000)
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#vm-head h1")).to_contain_text("db-01")
    expect(page.locator("#vm-head .state")).to_have_text("paused")
    expect(page.locator("#vm-head dd").nth(3)).not_to_have_text("–")  # the reason, from /vm
    # "Change token" forgets it.
    page.goto(gw.url + "/ui#/")
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("localStorage.getItem('kvmsup.token')") is None
    assert watch.errors == []


def test_the_page_keeps_working_while_an_agent_sends_out_of_range_figures(
    fleet: Fleet, broker: Broker, browser: Browser
) -> None:
    """A status with `1e999` (JSON's spelling of a number no client can hold) and metrics
    with an infinite CPU or a 400-digit count, as lab-a's credentials could publish them:
    the page neither fails to load nor loses its live connection."""
    gw = fleet.gw
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    watch = sign_in(page, gw, gw.tokens.viewer)
    vms = expect_fleet(page, gw)
    web = next(v for v in vms if v["name"] == "web-01")
    topics = Topics("kvmsup")
    forged = Recorder(broker.port)
    try:
        body = {"v": 1, "host": "lab-a", "online": True, "libvirt_connected": True}
        text = json.dumps({**body, "interval_s": 2}, separators=(",", ":"))
        text = text.replace('"interval_s":2', '"interval_s":1e999')
        forged.publish(topics.host_status("lab-a"), text, retain=True)
        entry = {"host": "lab-a", "uuid": web["uuid"], "name": "web-01", "state": "running"}
        for n, figure in enumerate(('"cpu_percent":1e999', '"memory_used_mb":1' + "0" * 400), 2):
            batch = {"v": 1, "host": "lab-a", "interval_s": 2, "tick": 1, "host_metrics": {}}
            vm = json.dumps({**entry, "vcpus": 2}).replace('"vcpus"', figure + ',"vcpus"')
            forged.publish(
                topics.host_metrics("lab-a"), json.dumps(batch)[:-1] + f',"vms":[{vm}]}}'
            )
            # One at a time: a newer batch of the host would shed one still queued.
            wait_until(lambda n=n: dropped(gw)["out_of_range"] >= n)
        fleet.conn.lookupByName("web-01").suspend()  # a real change still reaches the page
        expect(row(page, "lab-a", web["uuid"])).to_have_attribute("data-state", "paused")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        page.reload()  # and a first load with the retained status in place
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15000)
        expect(page.locator(".vm-row[data-key]")).to_have_count(FLEET_VMS, timeout=15000)
        assert watch.errors == []
    finally:
        forged.close()


def dropped(gw: GatewayProc) -> dict[str, int]:
    counts: dict[str, int] = gw.get("/health").json()["messages_dropped"]
    return counts


def test_a_wrong_token_is_refused_on_the_page(fleet: Fleet, browser: Browser) -> None:
    gw = fleet.gw
    page = browser.new_page()
    page.goto(gw.url + "/ui")
    page.fill("#token", "not-a-real-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("That token was not accepted.")
    assert page.locator(".vm-row[data-key]").count() == 0
    assert page.evaluate("localStorage.getItem('kvmsup.token')") is None


def test_an_open_gateway_needs_no_token_and_the_page_outlives_a_gateway_restart(
    fleet: Fleet, start_gateway: Callable[..., GatewayProc], browser: Browser
) -> None:
    """KVMSUP_AUTH=none: the page asks for no token and, as the API does, allows every action."""
    open_gw = start_gateway(KVMSUP_AUTH="none", gateway_id="gw-open")
    wait_ready(open_gw, vms=FLEET_VMS, timeout=30)
    page = browser.new_page()
    watch = Watch(page)
    page.goto(open_gw.url + "/ui")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15000)
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#who")).to_have_text("anonymous · operator")
    expect(page.locator(".vm-row[data-key]")).to_have_count(FLEET_VMS, timeout=15000)
    assert page.locator("button.act").count() > 0

    # The gateway restarts under the open page: it says so, reconnects by itself, and is live
    # again (a change made meanwhile included) without a reload.
    page.evaluate("window.__sameDocument = true")
    open_gw.stop()
    expect(page.locator("#conn")).to_have_attribute("data-state", "offline", timeout=15000)
    fleet.conn.lookupByName("test").suspend()
    open_gw.start()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30000)
    test_vm = page.locator('.vm-row[data-host="lab-a"][data-name="test"]')
    expect(test_vm).to_have_attribute("data-state", "paused", timeout=15000)
    assert page.evaluate("window.__sameDocument === true")
    # Socket.IO's reconnect logs the refused attempts while the gateway was down; nothing else.
    assert [e for e in watch.errors if "ERR_CONNECTION_REFUSED" not in e] == []


CLIMBING = [
    "/ui/../gateway/__init__.py",
    "/ui/%2e%2e/dashboard.py",
    "/ui/..%2fdashboard.py",
    "/ui/vendor/..%2F..%2Fdashboard.py",
    "/ui/%2fetc%2fpasswd",
    "/ui/vendor/uplot/../../../config.py",
]


def test_no_file_outside_the_dashboard_is_served_over_http(
    start_gateway: Callable[..., GatewayProc],
) -> None:
    """Paths that climb out of gateway/ui, sent as they are (no client-side normalising)."""
    gw = start_gateway()
    for path in CLIMBING:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=15)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        assert resp.status in (404, 308), (path, resp.status, body[:200])
        assert b"import" not in body and b"root:" not in body, (path, body[:200])
        if resp.status == 404:
            assert b'"not_found"' in body, (path, body[:200])
