"""benchmarks/simulate_hosts.py speaks the agent's contract (SPEC §3): the fleet benchmarks
measure the gateway against it, so it must look like real agents on the wire."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.messages import CommandReply, HostStatus, MetricsBatch, VmEvent, VmState
from tests.support.agentctl import AgentClient
from tests.support.broker import Broker
from tests.support.mqtt import Recorder
from tests.support.procs import ROOT

pytestmark = pytest.mark.service

HOST = "sim-0000"
RUNNING = "00000000-5100-4000-8000-000000000001"  # every tenth VM starts stopped, the rest run


@pytest.fixture
def simulator(broker: Broker) -> Iterator[subprocess.Popen[bytes]]:
    args = ["--broker", broker.url, "--hosts", "2", "--vms", "3", "--interval", "0.3"]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "simulate_hosts.py"), *args, "--processes", "2"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    yield proc
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture
def host(recorder: Recorder, simulator: subprocess.Popen[bytes]) -> AgentClient:
    client = AgentClient(recorder, HOST, gateway="gw-sim")
    client.wait_state(RUNNING, "running")
    return client


def test_status_states_and_batches_parse_with_the_shared_models(host: AgentClient) -> None:
    status = host.rec.wait_for(lambda m: m.topic == host.topics.host_status(HOST))
    assert HostStatus.model_validate_json(status[-1].payload).online
    for v in range(3):
        state = host.states(f"00000000-5100-4000-8000-{v:012x}")
        assert state, f"no retained state for VM {v}"
        VmState.model_validate(state[-1])
    batches = host.rec.wait_for(lambda m: m.topic == host.topics.host_metrics(HOST), count=2)
    first, second = (MetricsBatch.model_validate_json(b.payload) for b in batches[:2])
    assert [vm.uuid for vm in first.vms] == [f"00000000-5100-4000-8000-{v:012x}" for v in range(3)]
    assert second.tick == first.tick + 1 and second.ts > first.ts
    assert second.vms[1].network_io[0].rx_bytes > first.vms[1].network_io[0].rx_bytes


def test_a_command_is_accepted_done_and_shows_in_state_and_events(host: AgentClient) -> None:
    seq = host.states(RUNNING)[-1]["seq"]
    request_id = host.request("suspend", RUNNING)
    final = CommandReply.model_validate(host.wait_final(request_id))
    assert (final.status, final.state, final.changed) == ("succeeded", "paused", True)
    assert [r["status"] for r in host.replies(request_id)] == ["accepted", "succeeded"]
    state = host.wait_state(RUNNING, "paused")
    assert state["seq"] > seq and state["is_active"] is True
    outcome = host.rec.wait_for(
        lambda m: m.topic == host.topics.host_events(HOST) and m.json().get("id") == request_id
    )
    assert VmEvent.model_validate_json(outcome[-1].payload).status == "succeeded"
    # The same id again: the cached reply, not a second run.
    host.request("suspend", RUNNING, request_id=request_id)
    host.rec.wait_for(lambda m: m.correlation == request_id.encode(), count=3)
    assert host.call("suspend", RUNNING)["changed"] is False


def test_expired_and_deadline_less_requests_are_refused(host: AgentClient) -> None:
    expired = host.call("suspend", RUNNING, not_after=datetime.now(UTC) - timedelta(seconds=1))
    assert (expired["status"], expired["error"]["code"]) == ("rejected", "expired")
    body = {"v": 1, "id": "no-deadline", "action": "suspend", "vm": RUNNING, "by": "t"}
    reply = host.call("suspend", RUNNING, request_id="no-deadline", raw=json.dumps(body).encode())
    assert reply["status"] == "rejected" and "not_after" in reply["error"]["message"]
    # Barrier: a resume admitted after both is a no-op only if neither suspended the VM.
    resumed = host.call("resume", RUNNING)
    assert (resumed["status"], resumed["changed"], resumed["state"]) == (
        "succeeded",
        False,
        "running",
    )
    assert host.states(RUNNING)[-1]["state"] == "running"


def wait_both_online(host: AgentClient) -> None:
    """sim-0001 runs in the second process: it may connect after sim-0000 is up. Its retained
    `online` status says it is connected, so stopping it now must say goodbye."""
    host.rec.subscribe(host.topics.host_status("sim-0001"))
    for h in (HOST, "sim-0001"):
        topic = host.topics.host_status(h)
        host.rec.wait_for(lambda m, t=topic: m.topic == t and m.json()["online"], timeout=20)


def test_a_stopped_simulator_leaves_its_hosts_offline(
    host: AgentClient, simulator: subprocess.Popen[bytes]
) -> None:
    wait_both_online(host)
    simulator.terminate()
    simulator.wait(timeout=20)
    for h in (HOST, "sim-0001"):
        topic = host.topics.host_status(h)
        found = host.rec.wait_for(
            lambda m, t=topic: m.topic == t and not m.json()["online"], timeout=20
        )
        assert HostStatus.model_validate_json(found[-1].payload).online is False


def test_a_killed_simulated_host_is_announced_offline_by_its_will(
    host: AgentClient, simulator: subprocess.Popen[bytes]
) -> None:
    wait_both_online(host)
    host.rec.clear()
    children = [
        pid
        for pid in Path(f"/proc/{simulator.pid}/task/{simulator.pid}/children").read_text().split()
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()  # not the resource tracker
    ]
    assert len(children) == 2, children
    for pid in children:  # no farewell from a process killed with -9: only the will can say it
        os.kill(int(pid), signal.SIGKILL)
    for h in (HOST, "sim-0001"):
        topic = host.topics.host_status(h)
        found = host.rec.wait_for(lambda m, t=topic: m.topic == t, timeout=20)
        will = HostStatus.model_validate_json(found[-1].payload)
        assert will.online is False and will.agent_version is None
