"""Drive a running agent over MQTT the way a gateway does: v5 requests, replies by id."""

from __future__ import annotations

import json
import uuid as uuidlib
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.topics import Topics
from tests.support.mqtt import Received, Recorder

DEMO_A = {
    "web-01": "a0000000-0000-4000-8000-000000000001",
    "db-01": "a0000000-0000-4000-8000-000000000002",
    "shared-vm": "a0000000-0000-4000-8000-000000000003",
    "my vm #1 (test+dev)": "a0000000-0000-4000-8000-000000000004",
}
DEMO_B = {
    "shared-vm": "b0000000-0000-4000-8000-000000000001",
    "media 🎬 box": "b0000000-0000-4000-8000-000000000002",
    "backup": "b0000000-0000-4000-8000-000000000003",
}


class AgentClient:
    """A test gateway: sends `cmd` requests to one host and reads its replies."""

    def __init__(self, rec: Recorder, host: str, prefix: str = "kvmsup", gateway: str = "gw1"):
        self.rec = rec
        self.host = host
        self.topics = Topics(prefix)
        self.reply_topic = self.topics.reply(host, gateway)
        rec.subscribe(f"{self.topics.root}/{host}/#")  # replies included: one copy each

    def request(
        self,
        action: str,
        vm: str,
        *,
        request_id: str | None = None,
        params: dict[str, Any] | None = None,
        not_after: datetime | None = None,
        response_topic: str | None = None,
        raw: bytes | None = None,
        retain: bool = False,
        by: str = "tester",
    ) -> str:
        request_id = request_id or uuidlib.uuid4().hex
        body = {
            "v": 1,
            "ts": datetime.now(UTC).isoformat(),
            "id": request_id,
            "action": action,
            "vm": vm,
            "params": params or {},
            "by": by,
            "not_after": (not_after or datetime.now(UTC) + timedelta(seconds=30)).isoformat(),
        }
        payload = raw if raw is not None else json.dumps(body).encode()
        self.rec.publish(
            self.topics.cmd(self.host),
            payload,
            retain=retain,
            response_topic=response_topic or self.reply_topic,
            correlation=request_id.encode(),
            expiry=30,
        )
        return request_id

    def replies(self, request_id: str) -> list[dict[str, Any]]:
        return [
            m.json() for m in self.rec.on(self.reply_topic) if m.correlation == request_id.encode()
        ]

    def wait_final(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        def final(m: Received) -> bool:
            return (
                m.topic == self.reply_topic
                and m.correlation == request_id.encode()
                and m.json()["status"] != "accepted"
            )

        return self.rec.wait_for(final, timeout)[-1].json()

    def call(self, action: str, vm: str, timeout: float = 10.0, **kw: Any) -> dict[str, Any]:
        return self.wait_final(self.request(action, vm, **kw), timeout)

    def states(self, uuid: str) -> list[dict[str, Any]]:
        topic = self.topics.vm_state(self.host, uuid)
        return [m.json() for m in self.rec.on(topic) if m.payload]

    def wait_state(
        self, uuid: str, state: str, timeout: float = 10.0, since: float = 0.0
    ) -> dict[str, Any]:
        """The first retained state `state` of the VM received at or after `since` (monotonic)."""
        topic = self.topics.vm_state(self.host, uuid)
        found = self.rec.wait_for(
            lambda m: (
                m.topic == topic
                and m.at >= since
                and bool(m.payload)
                and m.json()["state"] == state
            ),
            timeout,
        )
        return found[-1].json()

    def events(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.rec.on(self.topics.host_events(self.host))]
