"""The agent on libvirt's test driver publishes status, states, metrics and events (SPEC §3)."""

from __future__ import annotations

import pytest

from shared.messages import HostStatus, MetricsBatch, VmEvent, VmState
from tests.support.agentctl import DEMO_A, AgentClient
from tests.support.mqtt import Received, Recorder
from tests.support.procs import demo_node_uri

pytestmark = pytest.mark.service


def test_status_states_metrics_and_events(broker, recorder, start_agent):
    client = AgentClient(recorder, "demo-a")
    start_agent("demo-a", demo_node_uri("demo-a"), KVMSUP_METRICS_INTERVAL="0.3")
    topics = client.topics

    # The first status may precede the libvirt connection; the next one says it is up.
    status_msg = recorder.wait_for(
        lambda m: m.topic == topics.host_status("demo-a") and m.json()["libvirt_connected"]
    )[-1]
    status = HostStatus.model_validate_json(status_msg.payload)
    assert status.online and status.libvirt_connected
    assert status.node is not None and status.node.cpus == 8
    assert status.hypervisor is not None and status.hypervisor.type == "TEST"

    for name, uuid in DEMO_A.items():
        msg = recorder.wait_for(lambda m, u=uuid: m.topic == topics.vm_state("demo-a", u))[-1]
        state = VmState.model_validate_json(msg.payload)
        assert state.name == name and state.uuid == uuid and state.host == "demo-a"
    assert client.states(DEMO_A["web-01"])[-1]["state"] == "running"
    assert client.states(DEMO_A["shared-vm"])[-1]["state"] == "stopped"

    # Retained: a client arriving later still gets status and every state at once.
    late = Recorder(broker.port)
    try:
        late.subscribe(f"{topics.root}/demo-a/status", f"{topics.root}/demo-a/vm/+/state")
        retained = late.wait_for(lambda m: m.retain, count=1 + len(DEMO_A))
        assert {m.topic for m in retained} == {topics.host_status("demo-a")} | {
            topics.vm_state("demo-a", u) for u in DEMO_A.values()
        }
    finally:
        late.close()

    # A metrics batch every tick, with the SPEC's fields for every VM.
    batches = recorder.wait_for(
        lambda m: m.topic == topics.host_metrics("demo-a"), count=6, timeout=20
    )
    batch = MetricsBatch.model_validate_json(batches[-1].payload)
    assert {vm.uuid for vm in batch.vms} == set(DEMO_A.values())
    web = next(vm for vm in batch.vms if vm.name == "web-01")
    assert web.state == "running" and web.vcpus == 2
    assert web.cpu_percent is not None and 0 <= web.cpu_percent <= 100
    assert web.memory_total_mb == 2048
    assert [d.device for d in web.disk_io] == ["vda"]
    assert web.disk_io[0].read_bps is not None and web.disk_io[0].read_bps >= 0
    assert [n.interface for n in web.network_io] == ["tap-web01"]
    # The cumulative counters a Prometheus scrape exports, as libvirt counts them.
    assert web.cpu_time_s is not None and web.cpu_time_s > 0
    assert web.disk_io[0].read_reqs is not None and web.disk_io[0].write_reqs is not None
    assert web.network_io[0].rx_packets is not None and web.network_io[0].tx_packets is not None
    # Each VM's interval_s is measured: the time since its previous sample, about the 0.3 s
    # tick. The tick keeps a fixed cadence, so a tick that ran late is followed by a short
    # interval: the lower bound holds for the mean of several, not for any one of them.
    intervals = [
        vm.interval_s
        for b in batches[1:]
        for vm in MetricsBatch.model_validate_json(b.payload).vms
        if vm.name == "web-01" and vm.interval_s is not None
    ]
    assert web.interval_s is not None and len(intervals) >= 3, intervals
    assert all(0.0 < i < 5.0 for i in intervals), intervals
    assert sum(intervals) / len(intervals) > 0.1, intervals
    stopped = next(vm for vm in batch.vms if vm.name == "shared-vm")
    assert stopped.state == "stopped" and stopped.cpu_percent == 0.0
    assert stopped.cpu_time_s is None
    assert batch.host_metrics.vms_total == 4 and batch.host_metrics.vms_running == 2
    assert batch.host_metrics.vcpus_allocated == 6
    ticks = [MetricsBatch.model_validate_json(b.payload).tick for b in batches]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)

    # An event on every change, and the new retained state.
    seq_before = client.states(DEMO_A["shared-vm"])[-1]["seq"]
    reply = client.call("start", DEMO_A["shared-vm"])
    assert reply["status"] == "succeeded"
    state = client.wait_state(DEMO_A["shared-vm"], "running")
    assert state["seq"] > seq_before
    events = recorder.wait_for(
        lambda m: (
            m.topic == topics.host_events("demo-a")
            and m.json().get("kind") == "lifecycle"
            and m.json().get("uuid") == DEMO_A["shared-vm"]
        )
    )
    event = VmEvent.model_validate_json(events[-1].payload)
    assert event.event == "started" and event.state == "running" and event.name == "shared-vm"


def test_per_vm_metrics_every_nth_tick(recorder, start_agent):
    client = AgentClient(recorder, "demo-a")
    start_agent(
        "demo-a",
        demo_node_uri("demo-a"),
        KVMSUP_METRICS_INTERVAL="0.2",
        KVMSUP_VM_METRICS_EVERY="3",
    )
    topic = client.topics.vm_metrics("demo-a", DEMO_A["web-01"])
    batches_topic = client.topics.host_metrics("demo-a")
    recorder.wait_for(lambda m: m.topic == topic, count=3, timeout=10)
    batches = recorder.on(batches_topic)
    per_vm = recorder.on(topic)
    # Every third tick, not every tick: Home Assistant's recorder is not flooded.
    assert len(batches) >= 3 * len(per_vm) - 3
    assert len(per_vm) <= len(batches) // 3 + 1
    assert per_vm[-1].json()["name"] == "web-01" and not per_vm[-1].retain


def test_unicode_names_stay_in_payloads(recorder, start_agent):
    AgentClient(recorder, "demo-b")
    start_agent("demo-b", demo_node_uri("demo-b"))
    recorder.wait_for(lambda m: "/vm/" in m.topic and m.topic.endswith("/state"), count=3)
    names = {m.json()["name"] for m in recorder.matching(lambda m: m.topic.endswith("/state"))}
    assert "media 🎬 box" in names
    for m in recorder.messages:
        assert " " not in m.topic and "🎬" not in m.topic and "#" not in m.topic


def retained_before(port: int, topic: str, control: str) -> list[Received]:
    """What the broker retains on `topic`, read by a new client that then subscribes to
    `control`, a topic known to hold a retained message (`topic` itself when it should): the
    broker sends a subscription's retained messages right after its SUBACK, in order on the
    connection, so once the control's has arrived any of `topic`'s has too."""
    late = Recorder(port)
    try:
        late.subscribe(*dict.fromkeys((topic, control)), settle=0)
        late.wait_for(lambda m: m.topic == control and m.retain)
        return late.on(topic)
    finally:
        late.close()


def test_retained_state_of_vanished_vm_is_cleared_at_startup(recorder, start_agent):
    client = AgentClient(recorder, "demo-a")
    ghost = "a0000000-0000-4000-8000-0000000000ff"
    topic = client.topics.vm_state("demo-a", ghost)
    port = recorder.client._port
    recorder.publish(topic, b'{"v":1,"name":"ghost"}', retain=True)
    # Positive control: the broker retains the ghost's state before the agent starts.
    held = retained_before(port, topic, control=topic)
    assert [(m.payload, m.retain) for m in held] == [(b'{"v":1,"name":"ghost"}', True)]
    start_agent("demo-a", demo_node_uri("demo-a"))
    recorder.wait_for(lambda m: m.topic == topic and m.payload == b"", timeout=10)
    # The broker holds nothing for it any more, though it holds the states of the VMs there are.
    web = client.topics.vm_state("demo-a", DEMO_A["web-01"])
    assert retained_before(port, topic, control=web) == []


@pytest.mark.parametrize("host_id", ["Bad/Host", "gateway", "-lead", "x" * 64])
def test_invalid_host_id_refuses_to_start(start_agent, host_id):
    svc = start_agent(host_id, demo_node_uri("demo-a"))
    assert svc.proc is not None
    assert svc.proc.wait(timeout=15) == 2
    assert f"invalid host id {host_id!r}" in svc.output()


def test_invalid_broker_url_is_refused_without_showing_the_password(start_agent):
    svc = start_agent(
        "demo-a", demo_node_uri("demo-a"), KVMSUP_MQTT_URL="http://admin:hunter2@broker:1883"
    )
    assert svc.proc is not None
    assert svc.proc.wait(timeout=15) == 2
    assert "KVMSUP_MQTT_URL must look like" in svc.output()
    assert "hunter2" not in svc.output()
