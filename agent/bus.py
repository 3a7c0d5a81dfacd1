"""The agent's paho-mqtt adapter: MQTT v5 session, will, `online` on every connect, publishing.

The only agent module that imports paho; the client itself is set up by `shared/mqtt.py`, as the
gateway's is. Callbacks run on paho's network thread: they convert the message once into an
`Inbound` and hand it to the service's queue, since a callback that blocks stops every delivery
and keepalive of the connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.config import AgentSettings
from agent.refusals import RefusalLog
from shared.mqtt import Backoff, PromptClient, Will, build_client, logged_callback, utf8_topic

logger = logging.getLogger(__name__)

# Reconnect delays drawn per process (whole seconds): first retry after 1-2 s, at most 8-11 s.
BACKOFF = Backoff(min_delay=(1, 2), max_delay=(8, 11))


@dataclass(frozen=True)
class Inbound:
    """A received message, decoupled from paho."""

    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation: bytes | None = None


@dataclass(frozen=True)
class Outbound:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Bus:
    """One MQTT client. `online_payload` is called on every CONNACK to publish retained `online`."""

    def __init__(
        self,
        settings: AgentSettings,
        client_id: str,
        will: Outbound,
        online: Callable[[], Outbound],
        subscriptions: list[tuple[str, bool]],
        on_message: Callable[[Inbound], None],
        on_connected: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._online = online
        self._subscriptions = subscriptions
        self._on_message_cb = on_message
        self._on_connected_cb = on_connected
        self._connected = threading.Event()
        self._generation = 0  # connections made so far: a change tells a reconnect happened
        self._refusals = RefusalLog()
        self.endpoint = settings.mqtt
        client = build_client(
            settings,
            client_id,
            Will(will.topic, will.payload, qos=will.qos, retain=will.retain),
            queue_limit=settings.offline_queue,
            backoff=BACKOFF,
            client_class=PromptClient,
        )
        client.on_connect = logged_callback(self._on_connect)
        client.on_disconnect = logged_callback(self._on_disconnect)
        client.on_message = logged_callback(self._on_message)
        client.on_publish = logged_callback(self._on_publish)
        self._client = client
        # PUBACKs still awaited for `publish_paced` messages (see there).
        self._paced: deque[mqtt.MQTTMessageInfo] = deque()
        self._paced_lock = threading.Lock()
        # mid -> reason code of PUBACKs that refused a message (MQTT v5), for `publish_confirmed`.
        self._refused: dict[int, int] = {}

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def generation(self) -> int:
        """Counts successful connections: two equal readings with `connected` true in between
        mean everything published meanwhile went out on one connection, in order."""
        return self._generation

    def start(self) -> None:
        self._client.connect_async(
            self.endpoint.host, self.endpoint.port, keepalive=self._settings.mqtt_keepalive
        )
        self._client.loop_start()

    def stop(self, farewell: Outbound | None = None) -> None:
        """Publishes `farewell` (the retained offline status) then disconnects cleanly."""
        if farewell is not None and self.connected:
            info = self._client.publish(
                farewell.topic, farewell.payload, qos=farewell.qos, retain=farewell.retain
            )
            try:
                info.wait_for_publish(timeout=3)
            except (RuntimeError, ValueError) as exc:
                logger.warning("offline status not delivered: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, msg: Outbound, *, correlation: bytes | None = None) -> bool:
        """Queues a message; False (and a log line) when paho refuses it (offline queue full)."""
        props = None
        if correlation is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = correlation
        info = self._client.publish(
            msg.topic, msg.payload, qos=msg.qos, retain=msg.retain, properties=props
        )
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            if correlation is not None:
                # A command reply: on the wire now, from the thread that made it.
                self._client.write_now()
            return True
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            # QoS 1 while offline: paho keeps it (within the bound) and sends it on reconnect.
            # QoS 0: dropped by design, the next tick replaces it.
            return msg.qos > 0
        logger.warning("publish to %s refused: %s", msg.topic, mqtt.error_string(info.rc))
        return False

    def publish_paced(self, msg: Outbound, window: int, timeout: float = 10.0) -> bool:
        """Like `publish`, for bulk senders (Home Assistant discovery): waits until fewer than
        `window` earlier paced messages await their PUBACK. paho's queue limit counts every
        unacknowledged QoS 1 message, connected or not, and refuses what comes beyond it, command
        replies included: a few thousand configs sent at once would make replies fail. Paced,
        the bulk holds at most `window` places and a reply queues behind at most that many.
        Offline it does not wait (the message joins the bounded offline queue, and goes out at the
        reconnect right behind the others: a sender whose steps need time between them compares
        `generation` before and after each). False when paho
        refused it or the backlog did not drain within `timeout` (the broker stopped acking)."""
        with self._paced_lock:
            deadline = time.monotonic() + timeout
            while self.connected:
                while self._paced and (
                    self._paced[0].rc != mqtt.MQTT_ERR_SUCCESS or self._paced[0].is_published()
                ):
                    self._paced.popleft()
                if len(self._paced) < window:
                    break
                if time.monotonic() > deadline:
                    logger.warning("broker stopped acknowledging: %d paced messages", window)
                    self._paced.clear()
                    return False
                time.sleep(0.002)
            info = self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                if msg.qos > 0:
                    self._paced.append(info)
                return True
            if info.rc == mqtt.MQTT_ERR_NO_CONN and msg.qos > 0:
                return True  # queued in paho until the reconnect, like `publish`
            logger.warning("publish to %s refused: %s", msg.topic, mqtt.error_string(info.rc))
            return False

    def publish_confirmed(self, msg: Outbound, timeout: float = 5.0) -> bool | None:
        """Publishes (QoS 1) and waits for the PUBACK: True accepted, False refused by the broker
        (reason code >= 0x80, e.g. 0x87 when the ACL denies the topic), None without an answer
        (offline, or none in time). Not from a paho callback."""
        if not self.connected:
            return None
        info = self._client.publish(msg.topic, msg.payload, qos=1, retain=msg.retain)
        try:
            info.wait_for_publish(timeout=timeout)
        except (RuntimeError, ValueError):
            return None
        if not info.is_published():
            return None
        return self._refused.pop(info.mid, None) is None

    # -- paho callbacks (network thread; each wrapped in `logged_callback`) ------------------
    def _on_publish(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reason: ReasonCode, _props: Any
    ) -> None:
        # Runs before paho marks the message published, so a waiter always finds it here.
        if reason.is_failure:
            if len(self._refused) > 1000:  # nobody asked about those: forget them
                self._refused.clear()
            self._refused[mid] = reason.value
        else:
            self._refused.pop(mid, None)  # a mid reused after an old refusal

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            logger.warning("MQTT broker refused the connection: %s", reason)
            return
        logger.info("connected to MQTT broker %r", self.endpoint)
        online = self._online()
        client.publish(online.topic, online.payload, qos=online.qos, retain=online.retain)
        for topic, no_local in self._subscriptions:
            # retainAsPublished: a command published retained is seen as such even when it
            # arrives live, so it is refused every time, not only after a reconnect.
            options = SubscribeOptions(qos=1, noLocal=no_local, retainAsPublished=True)
            client.subscribe(topic, options=options)
        self._generation += 1
        self._connected.set()
        self._on_connected_cb()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        self._connected.clear()
        logger.warning("disconnected from MQTT broker: %s", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic = utf8_topic(msg, self._bad_topic)
        if topic is None:
            return
        props = msg.properties
        response = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        self._on_message_cb(
            Inbound(topic, bytes(msg.payload), bool(msg.retain), response, correlation)
        )

    def _bad_topic(self, raw: bytes) -> None:
        self._refusals.refused("topic_not_utf8", "", "a message whose topic is not UTF-8: %r", raw)
