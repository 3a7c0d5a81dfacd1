"""The product on the real hypervisor: Mosquitto, `python -m agent`, `python -m gateway`.

Used by the e2e tests (the `stack` fixture) and by benchmarks/latency.py.
"""

from __future__ import annotations

import contextlib
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.agentctl import AgentClient
from tests.support.broker import Broker
from tests.support.gateway import GatewayProc, SioClient, wait_until
from tests.support.mqtt import Received, Recorder
from tests.support.procs import Service, agent_service


class TimedSio(SioClient):
    """A Socket.IO client that also notes when (monotonic) each event arrived."""

    def __init__(self, url: str, token: str | None) -> None:
        self.stamps: list[tuple[float, str, Any]] = []
        super().__init__(url, token)

    def _record(self, event: str, data: Any = None) -> None:
        self.stamps.append((time.monotonic(), event, data))
        super()._record(event, data)

    def first_state(
        self, uuid: str, state: str, since: float, timeout: float = 5.0
    ) -> tuple[float, dict[str, Any]]:
        """When the first `vm_state` of `uuid` in `state` arrived at or after `since`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, event, data in list(self.stamps):
                if (
                    at >= since
                    and event == "vm_state"
                    and data.get("uuid") == uuid
                    and data.get("state") == state
                ):
                    return at, data
            time.sleep(0.005)
        seen = [
            (e, d.get("name"), d.get("state"))
            for _, e, d in self.stamps[-15:]
            if isinstance(d, dict)
        ]
        raise AssertionError(f"no vm_state {state} of {uuid} within {timeout}s; saw {seen}")


@dataclass
class Stack:
    """A real Mosquitto, `python -m agent` on the private libvirtd, `python -m gateway`."""

    host: str
    broker: Broker
    agent: Service
    gateway: GatewayProc
    recorder: Recorder
    client: AgentClient

    def host_status(self) -> dict[str, Any]:
        found = self.recorder.on(self.client.topics.host_status(self.host))
        return found[-1].json() if found else {}

    def vm(self, name: str) -> dict[str, Any]:
        resp = self.gateway.get(f"/vm/{name}")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def poll(
        self, path: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """GET `path` (viewer) until its JSON body satisfies `predicate`; return that body."""
        found: dict[str, Any] = wait_until(
            lambda: (
                (r := self.gateway.get(path)).status_code == 200
                and predicate(body := r.json())
                and body
            ),
            timeout,
        )
        return found

    def wait_vm(self, name: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        found: dict[str, Any] = wait_until(
            lambda: (
                (v := self.gateway.get(f"/vm/{name}")).status_code == 200
                and v.json()["state"] == state
                and v.json()
            ),
            timeout,
        )
        return found

    def metrics(
        self,
        uuid: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10.0,
        since: float = 0.0,
    ) -> dict[str, Any]:
        """The first VM metrics (from the agent's per-tick batch) matching `predicate` received
        at or after `since` (monotonic): without it, a batch from before a fault may match."""
        topic = self.client.topics.host_metrics(self.host)

        def match(m: Received) -> bool:
            return (
                m.topic == topic
                and m.at >= since
                and any(v["uuid"] == uuid and predicate(v) for v in m.json()["vms"])
            )

        batch = self.recorder.wait_for(match, timeout)[0].json()
        found: dict[str, Any] = next(v for v in batch["vms"] if v["uuid"] == uuid)
        return found

    def sio(self) -> TimedSio:
        return TimedSio(self.gateway.url, self.gateway.tokens.viewer)

    def stop_recording(self) -> None:
        """The recorder stops taking a copy of the host's messages (for benchmarks: each copy
        is one more delivery by the broker and a wake-up of the benchmark's process, on the
        machine whose figures are being taken). `metrics()` and `host_status()` then see
        nothing new."""
        self.recorder.client.unsubscribe(f"{self.client.topics.root}/{self.host}/#")
        self.recorder.clear()

    def assert_clean_logs(self) -> None:
        for svc in (self.agent, self.gateway.service):
            out = svc.output()
            assert "Traceback" not in out, f"{svc.name} logged an exception:\n{out[-4000:]}"


@contextlib.contextmanager
def running_stack(workdir: Path, libvirt_uri: str, **agent_env: str) -> Iterator[Stack]:
    """Start everything, wait until the gateway serves the host online; stop all after."""
    workdir.mkdir(parents=True, exist_ok=True)
    host = f"e2e-{uuidlib.uuid4().hex[:6]}"
    broker = Broker(workdir)
    broker.start()
    started: list[Any] = []
    recorder: Recorder | None = None
    try:
        recorder = Recorder(broker.port)
        client = AgentClient(recorder, host)
        agent = agent_service(
            workdir, host, broker.url, libvirt_uri, KVMSUP_HA_DISCOVERY="false", **agent_env
        )
        started.append(agent.start())
        gateway = GatewayProc(workdir, broker.url, gateway_id=f"gw-{host}")
        started.append(gateway.start())
        stack = Stack(host, broker, agent, gateway, recorder, client)
        wait_until(
            lambda: (
                (h := gateway.get(f"/hosts/{host}")).status_code == 200
                and h.json().get("online")
                and h.json().get("libvirt_connected")
            ),
            15,
        )
        yield stack
        stack.assert_clean_logs()
    finally:
        for proc in reversed(started):
            proc.stop()
        if recorder is not None:
            recorder.close()
        broker.stop()
