"""One release apart, either way round: an agent of the previous release with this gateway,
and this agent with the previous release's gateway, list the host's VMs and run a command
(SPEC §9: the message `v` field is the contract, added fields are optional and ignored).

The previous release is a commit of this repository's own history, run from a `git archive`
of it with this tree's virtualenv (its dependencies are the same)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.gateway import GatewayProc, wait_until
from tests.support.ports import wait_port
from tests.support.procs import ROOT, Service, agent_service

pytestmark = pytest.mark.package

# The last landing before this release's contract changes (bounded payloads, the snapshots and
# guest topics): what agents and gateways in the field run when this one is installed.
PREVIOUS = "58e8ddb5fe864a19b98f84efafde92dfa9ff553e"
VMS_OF_DEMO_A = 4


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("previous")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", PREVIOUS, "agent", "gateway", "shared"],
        capture_output=True,
        timeout=60,
    )
    if archive.returncode != 0:
        pytest.fail(
            f"the previous release {PREVIOUS[:8]} is not in this clone's history (a shallow "
            f"clone?): {archive.stderr.decode(errors='replace')[:300]}"
        )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def run(svc: Service, cwd: Path) -> Service:
    svc.cwd = cwd
    return svc.start()


def check_commands_cross(gw: GatewayProc) -> None:
    wait_until(lambda: gw.get("/vms").json()["count"] == VMS_OF_DEMO_A, timeout=30)
    wait_until(lambda: gw.get("/hosts/demo-a").json()["online"], timeout=30)
    resp = gw.post("/vm/web-01/stop", json={"force": True})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["action"]) == ("succeeded", "destroy")
    wait_until(lambda: gw.get("/vm/web-01").json()["state"] == "stopped", timeout=15)
    assert gw.post("/vm/web-01/start").json()["status"] == "succeeded"


def test_an_agent_of_the_previous_release_works_with_this_gateway(
    tmp_path: Path, broker: Broker, previous: Path
) -> None:
    uri = f"test://{previous / 'agent' / 'demo' / 'demo-a.xml'}"
    agent = run(agent_service(tmp_path, "demo-a", broker.url, uri), previous)
    gw = GatewayProc(tmp_path, broker.url).start()
    try:
        check_commands_cross(gw)
        # The previous agent's code, indeed: it never says anything of the guest.
        wait_until(lambda: gw.get("/vm/web-01").json()["state"] == "running", timeout=15)
        assert gw.get("/vm/web-01/guest").json()["status"] == "unknown"
    finally:
        gw.stop()
        agent.stop()
    for svc in (agent, gw.service):
        assert "Traceback" not in svc.output(), svc.output()[-3000:]


def test_this_agent_works_with_the_previous_releases_gateway(
    tmp_path: Path, broker: Broker, previous: Path
) -> None:
    uri = f"test://{ROOT / 'agent' / 'demo' / 'demo-a.xml'}"
    agent = agent_service(tmp_path, "demo-a", broker.url, uri).start()
    gw = GatewayProc(tmp_path, broker.url)
    run(gw.service, previous)
    wait_port(gw.port, timeout=15)
    try:
        check_commands_cross(gw)
        assert gw.get("/guests").status_code == 404  # the previous gateway's code, indeed
    finally:
        gw.stop()
        agent.stop()
    for svc in (agent, gw.service):
        assert "Traceback" not in svc.output(), svc.output()[-3000:]
