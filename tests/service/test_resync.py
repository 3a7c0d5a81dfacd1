"""The agent's resync after a libvirt connect, on a slow listing (libvirt's test:/// driver)."""

from __future__ import annotations

import queue
import time

import pytest

from agent import service as service_module
from agent.config import AgentSettings
from agent.service import AgentService
from tests.support.procs import demo_node_uri

pytestmark = pytest.mark.service


def test_a_listing_slower_than_one_event_call_still_resyncs_without_reconnecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each VM of the listing costs several RPCs: on a large or remote host the whole listing
    # takes longer than one event-worker call may. It used to time out, drop the connection,
    # reconnect and time out again, for ever; the VMs were never listed.
    monkeypatch.setattr(service_module, "EVENT_CALL_TIMEOUT_S", 0.2)
    settings = AgentSettings(
        host_id="demo-a",
        libvirt_uri=demo_node_uri("demo-a"),
        mqtt_url="mqtt://127.0.0.1:1",  # never started: only the resync runs here
        ha_discovery=False,
        memory_stats_period=0,
    )
    svc = AgentService(settings)
    svc.hypervisor.start()
    try:
        deadline = time.monotonic() + 15
        while True:
            ev = svc._hv_events.get(timeout=max(0.1, deadline - time.monotonic()))
            if ev.kind == "connected":
                break
        svc.hypervisor.hold = lambda stage, _uuid: time.sleep(0.1) if stage == "list" else None
        svc._resync()  # 4 VMs x 0.1 s: twice the event-call deadline
        assert svc.inventory.synced
        assert len(svc.inventory.all()) == 4
        assert svc.hypervisor.connected
        with pytest.raises(queue.Empty):  # the connection was not given up
            while True:
                assert svc._hv_events.get(timeout=1.5).kind != "disconnected"
    finally:
        svc.hypervisor.hold = None
        svc.executor.close_workers()
        svc.hypervisor.stop()
