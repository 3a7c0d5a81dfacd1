"""The MQTT adapter: the only gateway module that imports paho (the client itself is set up by
`shared/mqtt.py`, as the agent's is). Decodes every message into a model."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.adapters.inbox import OTHER_MAX, Inbox, Queued, Raw
from gateway.blocking import under_gevent
from gateway.config import Settings
from gateway.core.drops import Drops
from gateway.core.ingest import Drop, Inbound, VmRemoved, decode
from gateway.errors import BusError
from shared.messages import CommandRequest, GatewayStatus, dump
from shared.mqtt import Backoff, PromptClient, Will, build_client, logged_callback, utf8_topic
from shared.topics import Topics

logger = logging.getLogger(__name__)

__all__ = ["Bus", "Inbound", "VmRemoved", "decode", "gateway_version"]

# Messages other than metrics waiting for the ingest thread. Bounded so a stalled handler
# cannot grow memory without end; when full, paho's thread drops (and logs) rather than waits.
INBOX_SIZE = OTHER_MAX
# How long stopping waits for the ingest thread to apply what it was given before the stop.
INGEST_DRAIN_S = 10.0
# Commands and statuses paho keeps awaiting the broker's acknowledgement at most; beyond, a
# command is refused at once (503) rather than sent late.
OUTGOING_QUEUE = 100
# Reconnect delays drawn per process (whole seconds): first retry after 1 s, at most 4-8 s.
BACKOFF = Backoff(min_delay=(1, 1), max_delay=(4, 8))


def gateway_version() -> str:
    try:
        return version("kvmsup")
    except PackageNotFoundError:
        return "0.0.0"


# Packets read per network wake-up at most (see `_DrainingClient`).
READ_BURST = 64


def _readable(sock: Any) -> bool:
    """Whether the socket holds data now, without waiting (nor, under gevent, yielding)."""
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted in Python
    if pending is not None and pending():
        return True
    poll = _original_select()
    try:
        return bool(poll([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return False


@functools.cache  # first called once the client reads, long after gevent patched the process
def _original_select() -> Callable[..., Any]:
    if under_gevent():
        import gevent.monkey

        return gevent.monkey.get_original("select", "select")  # type: ignore[no-any-return]
    import select

    return select.select


class _DrainingClient(PromptClient):
    """paho reads ONE packet per wake-up of its network loop. Under gevent every wake-up is a
    trip through the hub, so the reader is paced to the ingest, one message each, and a
    backlog stays in the broker, where the inbox cannot shed superseded metrics batches and
    the gateway applies every stale one in turn. This reads what the socket already holds."""

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        for _ in range(READ_BURST - 1):
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not _readable(self.socket()):
                break
            rc = super().loop_read(max_packets)
        return rc


class Bus:
    """paho 2.x client (MQTT v5): connects in the background, re-subscribes on every CONNACK,
    hands decoded models to `handler` on one ingest thread (never on paho's network thread)."""

    def __init__(
        self,
        settings: Settings,
        handler: Callable[[Inbound], None],
        inbox_size: int = INBOX_SIZE,
        drops: Drops | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.gateway_id = settings.gateway_id
        self.handler = handler
        self.url = settings.mqtt
        self._connected = threading.Event()
        self.drops = drops or Drops()
        self._inbox = Inbox(inbox_size, on_shed=self._shed)
        self._status_topic = self.topics.gateway_status(self.gateway_id)
        self._client = self._make_client()
        self._ingest = threading.Thread(target=self._ingest_loop, name="mqtt-ingest", daemon=True)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _make_client(self) -> PromptClient:
        will = GatewayStatus(gateway=self.gateway_id, online=False, version=gateway_version())
        client = build_client(
            self.settings,
            f"kvmsup-gateway-{self.gateway_id}",
            Will(self._status_topic, dump(will), qos=1, retain=True),
            queue_limit=OUTGOING_QUEUE,
            backoff=BACKOFF,
            client_class=_DrainingClient,
        )
        client.on_connect = logged_callback(self._on_connect)
        client.on_disconnect = logged_callback(self._on_disconnect)
        client.on_message = logged_callback(self._on_message)
        return client

    def start(self) -> None:
        self._ingest.start()
        expiry = self.settings.mqtt_session_expiry
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = expiry
        # Not a clean start, even the first time: the session of the previous run of this
        # gateway id holds the replies and events that came while it was down (QoS 1).
        self._client.connect_async(
            self.url.host,
            self.url.port,
            keepalive=self.settings.mqtt_keepalive,
            clean_start=expiry == 0,
            properties=props,
        )
        self._client.loop_start()
        logger.info("gateway %s connecting to %r", self.gateway_id, self.url)

    def stop(self) -> None:
        if self.connected:
            status = GatewayStatus(gateway=self.gateway_id, online=False, version=gateway_version())
            info = self._client.publish(self._status_topic, dump(status), qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2)
        self._client.disconnect()
        self._client.loop_stop()  # nothing more reaches the inbox
        if not self._ingest.is_alive():
            return
        # The ingest thread applies what is queued, then ends.
        self._inbox.close()
        self._ingest.join(INGEST_DRAIN_S)
        if self._ingest.is_alive():
            logger.warning("the ingest thread did not finish within %g s", INGEST_DRAIN_S)

    # -- paho callbacks (network thread: never block here; each in `logged_callback`) -------
    def _on_connect(
        self, client: mqtt.Client, _u: object, flags: object, reason: object, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            logger.warning("broker refused the connection: %s", reason)
            return
        client.subscribe([(t, 1) for t in self.topics.gateway_subscriptions(self.gateway_id)])
        status = GatewayStatus(gateway=self.gateway_id, online=True, version=gateway_version())
        client.publish(self._status_topic, dump(status), qos=1, retain=True)
        self._connected.set()
        resumed = bool(getattr(flags, "session_present", False))
        logger.info(
            "connected to the broker %r (%s)",
            self.url,
            "session resumed" if resumed else "new session",
        )

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        self._connected.clear()
        logger.warning("disconnected from the broker: %s", reason)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        topic = utf8_topic(msg, self._bad_topic)
        if topic is None:
            return
        props = getattr(msg, "properties", None)
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        self.deliver(topic, msg.payload, bool(getattr(msg, "retain", False)), correlation)

    def _bad_topic(self, raw: bytes) -> None:
        self.drops.drop("bad_topic", repr(raw), "the topic is not UTF-8")

    def deliver(
        self,
        topic: str,
        payload: bytes | bytearray,
        retained: bool = False,
        correlation: bytes | None = None,
    ) -> None:
        """Queue one raw message for the ingest thread; never waits (paho's network thread)."""
        item: Raw = (topic, bytes(payload), retained, correlation)
        if topic.endswith("/metrics"):
            self._inbox.put_metrics(item)
        elif not self._inbox.put(item):
            self.drops.drop(
                "inbox_full", topic, f"{self._inbox.maxsize} messages wait for the ingest thread"
            )

    def _shed(self, item: Raw, why: str) -> None:
        self.drops.drop("ingest_behind", item[0], f"{why}: the ingest thread is behind")

    def queued(self) -> Queued:
        """The ingest thread's backlog (for /health and /metrics)."""
        return self._inbox.queued()

    # -- ingest thread -------------------------------------------------------------------------
    def _ingest_loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            self._ingest_one(item)
            # A pause point between messages: under gevent the ingest is a greenlet and must
            # let the requests run; under threads it hands the GIL over at a message boundary.
            time.sleep(0)

    def _ingest_one(self, item: Raw) -> None:
        topic, payload, retained, correlation = item
        try:
            model = decode(
                self.topics,
                self.gateway_id,
                topic,
                payload,
                retained=retained,
                correlation=correlation,
                max_bytes=self.settings.max_message_bytes,
            )
            if isinstance(model, Drop):
                self.drops.drop(model.reason, topic, model.detail, payload)
            else:
                self.handler(model)
        except Exception:
            logger.exception("handling a message on %s failed", topic)
            self.drops.drop("handler_error", topic, "see the traceback above", payload)

    # -- commands (request threads) ------------------------------------------------------------
    def send_command(self, host: str, request: CommandRequest, expiry_s: int) -> Callable[[], None]:
        """Publish a command as an MQTT v5 request, without waiting: the returned function
        waits for the broker's PUBACK. Either raises BusError when the broker cannot take it."""
        if not self.connected:
            raise BusError("the gateway is not connected to the MQTT broker")
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self.topics.reply(host, self.gateway_id)
        props.CorrelationData = request.id.encode()
        props.MessageExpiryInterval = max(1, expiry_s)
        info = self._client.publish(self.topics.cmd(host), dump(request), qos=1, properties=props)
        # On the wire before the job's listeners run: under gevent, paho's network greenlet
        # would write it only after the Socket.IO pushes they start.
        self._client.write_now()

        def confirm() -> None:
            try:
                info.wait_for_publish(3)
            except (RuntimeError, ValueError) as exc:
                raise BusError("the broker did not take the command") from exc
            if not info.is_published():
                raise BusError("the broker did not acknowledge the command in time")

        return confirm
