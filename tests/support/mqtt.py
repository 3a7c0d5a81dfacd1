"""An MQTT v5 test client that records what it receives and waits for messages."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    correlation: bytes | None
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Recorder:
    """Connects to a broker, subscribes, keeps every message; `wait_for` polls the record."""

    def __init__(
        self,
        url_port: int,
        client_id: str | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._subacks: dict[int, list[ReasonCode]] = {}  # SUBACK reason codes by message id
        self._subacked = threading.Condition()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect = lambda *a: self._connected.set()
        if credentials is not None:
            self.client.username_pw_set(*credentials)
        self.client.connect("127.0.0.1", url_port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("test client could not connect")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        rec = Received(msg.topic, msg.payload, bool(msg.retain), msg.qos, corr, time.monotonic())
        with self._lock:
            self.messages.append(rec)

    def _on_subscribe(
        self,
        client: Any,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Any,
    ) -> None:
        with self._subacked:
            self._subacks[mid] = list(reason_codes)
            self._subacked.notify_all()

    def subscribe(self, *topics: str, settle: float = 0.3) -> None:
        """Subscribes to each topic in turn, each granted by the broker's SUBACK (a refused or
        unanswered subscription fails the test: nothing received would prove nothing)."""
        for topic in topics:
            result, mid = self.client.subscribe(topic, qos=1)
            assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None, (topic, result)
            refused = [str(c) for c in self._suback(mid, topic) if c.is_failure]
            assert not refused, f"subscription to {topic!r} refused: {refused}"
        time.sleep(settle)

    def _suback(self, mid: int, topic: str) -> list[ReasonCode]:
        with self._subacked:
            if not self._subacked.wait_for(lambda: mid in self._subacks, 5):
                raise TimeoutError(f"no SUBACK from the broker for {topic!r}")
            return self._subacks.pop(mid)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        expiry: int | None = None,
    ) -> None:
        props = Properties(PacketTypes.PUBLISH)
        if response_topic:
            props.ResponseTopic = response_topic
        if correlation is not None:
            props.CorrelationData = correlation
        if expiry is not None:
            props.MessageExpiryInterval = expiry
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(5)

    def matching(self, predicate: Callable[[Received], bool]) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if predicate(m)]

    def on(self, topic: str) -> list[Received]:
        return self.matching(lambda m: m.topic == topic)

    def wait_for(
        self, predicate: Callable[[Received], bool], timeout: float = 10.0, count: int = 1
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(predicate)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {count} message(s); saw "
            f"{[(m.topic, m.payload[:120]) for m in self.messages[-15:]]}"
        )

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def close(self) -> None:
        # DISCONNECT first: it wakes paho's network loop, which then ends at once; stopped
        # first, the loop sits out its select timeout (about a second) before it is joined.
        self.client.disconnect()
        self.client.loop_stop()
