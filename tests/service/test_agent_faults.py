"""Faults with real processes: agent kill -9 (the will), broker kill -9 and restart."""

from __future__ import annotations

import time

import pytest

from tests.support.agentctl import DEMO_A, AgentClient
from tests.support.procs import demo_node_uri

pytestmark = pytest.mark.service


def test_kill_9_agent_publishes_the_will_within_1_5_keepalive(recorder, start_agent):
    keepalive = 2
    client = AgentClient(recorder, "demo-a")
    agent = start_agent("demo-a", demo_node_uri("demo-a"), KVMSUP_MQTT_KEEPALIVE=str(keepalive))
    status_topic = client.topics.host_status("demo-a")
    recorder.wait_for(lambda m: m.topic == status_topic and m.json()["online"])
    # The last packet the agent sent: the keepalive clock of the broker starts there.
    time.sleep(0.5)
    agent.kill9()
    killed_at = time.monotonic()
    will = recorder.wait_for(
        lambda m: m.topic == status_topic and not m.json()["online"], timeout=3 * keepalive
    )[-1]
    assert will.at - killed_at <= 1.5 * keepalive + 0.5
    assert will.json()["host"] == "demo-a" and will.json()["v"] == 1


def test_graceful_stop_says_offline_at_once(recorder, start_agent):
    client = AgentClient(recorder, "demo-a")
    agent = start_agent("demo-a", demo_node_uri("demo-a"))
    status_topic = client.topics.host_status("demo-a")
    recorder.wait_for(lambda m: m.topic == status_topic and m.json()["online"])
    assert agent.stop() == 0
    # The farewell (full status), not the will: 10 s only for a busy machine to deliver it.
    offline = recorder.wait_for(lambda m: m.topic == status_topic and not m.json()["online"], 10)
    assert offline[-1].json()["libvirt_uri"]  # the full status, not just the will


def test_broker_restart_is_survived_without_restarting_the_agent(broker, start_agent):
    from tests.support.mqtt import Recorder

    agent = start_agent("demo-a", demo_node_uri("demo-a"), KVMSUP_METRICS_INTERVAL="0.3")
    rec = Recorder(broker.port)
    client = AgentClient(rec, "demo-a")
    client.wait_state(DEMO_A["web-01"], "running")
    # Change something so that the state to restore is not just the node file's.
    assert client.call("start", DEMO_A["shared-vm"])["status"] == "succeeded"
    rec.close()

    broker.kill()  # kill -9: no persistence in the dev config, every retained message is gone
    time.sleep(1.0)
    broker.start()
    restarted_at = time.monotonic()

    rec = Recorder(broker.port)
    try:
        client = AgentClient(rec, "demo-a")
        topics = client.topics
        rec.wait_for(
            lambda m: m.topic == topics.host_status("demo-a") and m.json()["online"], timeout=20
        )
        client.wait_state(DEMO_A["shared-vm"], "running", timeout=5)
        for uuid in DEMO_A.values():
            rec.wait_for(lambda m, u=uuid: m.topic == topics.vm_state("demo-a", u), timeout=5)
        rec.wait_for(lambda m: m.topic == topics.host_metrics("demo-a"), count=2, timeout=5)
        assert agent.alive()
        print(f"agent back {time.monotonic() - restarted_at:.1f}s after the broker restart")
        # And it still executes commands.
        assert client.call("suspend", DEMO_A["web-01"])["state"] == "paused"
    finally:
        rec.close()


def test_sigterm_during_a_shutdown_wait_exits_at_once_and_answers_it(
    recorder, start_agent, tmp_path
):
    # web-01 restarts on power-off (the test driver then keeps it running): its shutdown
    # waits the full timeout_s. SIGTERM must not wait for it, nor leave it without an end.
    from tests.support.procs import DEMO_DIR

    node = tmp_path / "stubborn.xml"
    xml = (DEMO_DIR / "demo-a.xml").read_text()
    node.write_text(
        xml.replace("<name>web-01</name>", "<name>web-01</name><on_poweroff>restart</on_poweroff>")
    )
    client = AgentClient(recorder, "demo-a")
    agent = start_agent("demo-a", f"test://{node}")
    web = DEMO_A["web-01"]
    client.wait_state(web, "running")
    request_id = client.request("shutdown", web, params={"timeout_s": 120})
    client.wait_state(web, "shutting_down")  # the shutdown was sent; the guest ignores it
    asked = time.monotonic()
    assert agent.stop(timeout=30) == 0
    # Well short of the 120 s the guest is given: the stop did not wait for the shutdown.
    assert time.monotonic() - asked < 30
    final = client.wait_final(request_id, timeout=15)
    assert final["status"] == "timed_out" and final["error"]["code"] == "agent_stopping"
    assert final["escalated"] is False
    assert [r["status"] for r in client.replies(request_id)] == ["accepted", "timed_out"]
