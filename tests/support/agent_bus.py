"""A stand-in for the agent's bus in pure unit tests: records what the agent handed to MQTT."""

from __future__ import annotations

import json
from typing import Any

from agent.bus import Outbound


class RecordingBus:
    """`publish` as the agent's Bus offers it, always accepted; `sent` in order."""

    def __init__(self) -> None:
        self.sent: list[Outbound] = []

    def publish(self, msg: Outbound, *, correlation: bytes | None = None) -> bool:
        self.sent.append(msg)
        return True

    def on(self, topic: str) -> list[Outbound]:
        return [m for m in self.sent if m.topic == topic]

    def payloads(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.on(topic)]
