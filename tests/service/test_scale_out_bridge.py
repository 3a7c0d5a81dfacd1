"""Two Mosquitto brokers bridged by broker/bridge.example.conf: agents on the site broker, the
gateway on the central one, and the whole contract through the bridge (docs/SCALING.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.service.conftest import DEMO_VMS, wait_ready
from tests.support.broker import ROOT, Broker
from tests.support.gateway import GatewayProc, wait_until
from tests.support.mqtt import Recorder
from tests.support.procs import Service, agent_service, demo_node_uri

pytestmark = pytest.mark.service

BRIDGE_CONF = ROOT / "broker" / "bridge.example.conf"
SLOW = 30.0  # a busy machine slows every process: generous, never timed
WEB_01 = "a0000000-0000-4000-8000-000000000001"
STATE_TOPIC = f"kvmsup/v1/demo-a/vm/{WEB_01}/state"
BRIDGE_STATE = "$SYS/broker/connection/kvmsup-bridge-site1/state"


def bridge_section(central_port: int) -> str:
    """The example as it is, but for the central broker's address and without the lines it
    marks as TLS and credentials (the test brokers are plain loopback ones)."""
    text = BRIDGE_CONF.read_text()
    text, marked = re.subn(r"# \[tls\+credentials\].*?# \[end\]\n", "", text, flags=re.S)
    assert marked == 1, "the TLS and credential lines are no longer marked"
    text, moved = re.subn(r"^address \S+$", f"address 127.0.0.1:{central_port}", text, flags=re.M)
    assert moved == 1
    return text


@pytest.fixture
def site(tmp_path: Path, broker: Broker) -> Iterator[Broker]:
    """The agents' broker, bridged to the test's broker (the central one, the gateway's)."""
    workdir = tmp_path / "site"
    workdir.mkdir()
    site = Broker(workdir)
    with site.conf.open("a") as conf:
        conf.write("\n" + bridge_section(broker.port))
    site.start()
    yield site
    site.stop()


@pytest.fixture
def site_agents(tmp_path: Path, site: Broker) -> Iterator[dict[str, Service]]:
    agents = {
        h: agent_service(tmp_path, h, site.url, demo_node_uri(h)).start()
        for h in ("demo-a", "demo-b")
    }
    yield agents
    for svc in agents.values():
        svc.stop()
    for svc in agents.values():
        out = svc.output()
        assert "Traceback" not in out, f"{svc.name} logged an exception:\n{out[-4000:]}"


def test_the_whole_contract_crosses_a_bridge(
    broker: Broker,  # the central one
    site: Broker,
    site_agents: dict[str, Service],
    start_gateway: Callable[..., GatewayProc],
    recorder: Recorder,  # on the central broker
) -> None:
    recorder.subscribe("kvmsup/v1/+/reply/#", "kvmsup/v1/+/vm/+/metrics", "homeassistant/#")
    gw = start_gateway()

    # Retained states and statuses: the gateway, on the central broker, has the whole fleet.
    wait_ready(gw, DEMO_VMS, timeout=SLOW)
    # Metrics batches (QoS 0) and the per-VM metrics of Home Assistant's sensors.
    wait_until(lambda: gw.get("/vm/web-01/metrics").json()["cpu_percent"] is not None, SLOW)
    recorder.wait_for(lambda m: m.topic.endswith(f"/vm/{WEB_01}/metrics"), SLOW)
    # Home Assistant discovery, retained, out; its birth message in.
    recorder.wait_for(lambda m: m.topic.startswith("homeassistant/switch/kvmsup_demo-a/"), SLOW)
    late = Recorder(broker.port)  # joins later: gets what the central broker retained
    try:
        late.subscribe("homeassistant/switch/#", BRIDGE_STATE)
        kept = late.wait_for(lambda m: "kvmsup_demo-a" in m.topic, SLOW)
        assert any(m.retain for m in kept)  # (live ones may follow, not flagged)
        # The bridge's own state, which docs/SCALING.md tells operators to watch.
        state = late.wait_for(lambda m: m.topic == BRIDGE_STATE, SLOW)
        assert (state[-1].payload, state[-1].retain) == (b"1", True)
    finally:
        late.close()
    at_site = Recorder(site.port)
    try:
        at_site.subscribe("homeassistant/status")
        recorder.publish("homeassistant/status", "online")
        at_site.wait_for(lambda m: m.payload == b"online", SLOW)
    finally:
        at_site.close()

    # A command: its MQTT v5 ResponseTopic and CorrelationData cross to the agent, and its
    # replies come back to this gateway's reply topic with the job's id as correlation data.
    resp = gw.post("/vm/web-01/stop", json={"force": True})
    assert resp.status_code == 200, resp.text
    job = resp.json()
    assert (job["status"], job["state"]) == ("succeeded", "stopped")
    replies = recorder.wait_for(lambda m: m.correlation == job["id"].encode(), SLOW, count=2)
    assert {m.topic for m in replies} == {"kvmsup/v1/demo-a/reply/gw-test"}
    assert [m.json()["status"] for m in replies] == ["accepted", "succeeded"]
    # The command's outcome on the host's events stream (the audit trail).
    wait_until(
        lambda: any(
            e.get("id") == job["id"]
            for e in gw.get("/events?kind=command&host=demo-a").json()["events"]
        ),
        SLOW,
    )
    # A plain command on `set`, as Home Assistant sends it from the central broker.
    recorder.publish(f"kvmsup/v1/demo-a/vm/{WEB_01}/set", "ON")
    wait_until(lambda: gw.get("/vm/web-01").json()["state"] == "running", SLOW)

    # The birth message went in and nothing sent it back out: the central broker had it once.
    assert len(recorder.on("homeassistant/status")) == 1

    # The will: an agent that dies without a word is offline at the central broker too.
    site_agents["demo-b"].kill9()
    wait_until(lambda: gw.get("/hosts/demo-b").json()["online"] is False, SLOW)
    assert gw.get("/hosts/demo-a").json()["online"] is True
    # And a command for one of its VMs is refused at once, not sent into the void.
    refused = gw.post("/vm/backup/start")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "host_offline"

    # A central broker that restarts empty (no persistence) is filled again from the site: the
    # bridge sends the site's retained statuses and states again when it reconnects.
    broker.restart()
    wait_until(lambda: gw.get("/health").json()["broker_connected"], SLOW)
    watch = Recorder(broker.port)
    try:
        watch.subscribe(BRIDGE_STATE)
        # The bridge retries with a growing, jittered delay (restart_timeout 2 30).
        watch.wait_for(lambda m: m.topic == BRIDGE_STATE and m.payload == b"1", 90)
    finally:
        watch.close()
    wanted = {"kvmsup/v1/demo-a/status", "kvmsup/v1/demo-b/status", STATE_TOPIC}

    def retained() -> dict[str, bytes] | None:
        fresh = Recorder(broker.port)  # what the broker keeps arrives flagged retained
        try:
            fresh.subscribe("kvmsup/v1/+/status", STATE_TOPIC, settle=1.0)
            got = {m.topic: m.payload for m in fresh.matching(lambda m: m.retain)}
        finally:
            fresh.close()
        return got if wanted <= got.keys() else None

    kept = wait_until(retained, SLOW, every=1.0)
    online = {t: json.loads(kept[t])["online"] for t in wanted - {STATE_TOPIC}}
    assert online == {"kvmsup/v1/demo-a/status": True, "kvmsup/v1/demo-b/status": False}
