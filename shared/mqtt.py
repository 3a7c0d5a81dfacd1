"""The paho 2.x client setup both services share, and the callback guards around it.

MQTT v5, credentials and TLS from the settings, the will, jittered reconnects, TCP_NODELAY, a
bounded outgoing queue, and callbacks that log what they raise. What differs (client id, will
payload, subscriptions, sessions, the gateway's reader) stays in each service's bus module.
"""

from __future__ import annotations

import functools
import logging
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from shared.settings import ServiceSettings

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., None])
C = TypeVar("C", bound=mqtt.Client)

# Bytes of a topic that is not UTF-8 handed to the service to report: enough to recognise it,
# not enough for a sender to flood a log line.
BAD_TOPIC_SHOWN = 256


@dataclass(frozen=True)
class Will:
    """What the broker publishes for a client that vanished (its retained `offline` status)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays in whole seconds (paho takes ints): paho doubles from `min_delay` to
    `max_delay` identically in every client, so each process draws both from these ranges and a
    fleet does not reconnect in one burst after a broker restart."""

    min_delay: tuple[int, int]
    max_delay: tuple[int, int]

    def draw(self, rng: random.Random | None = None) -> tuple[int, int]:
        pick = rng or random
        return pick.randint(*self.min_delay), pick.randint(*self.max_delay)


def logged_callback(callback: F) -> F:
    """Wrap a paho callback so whatever it raises is logged with its traceback (on the logger of
    the callback's module) and swallowed. Left to paho, an exception either ends its network
    thread (`suppress_exceptions` off) or vanishes (on: paho reports it only to a logger it was
    given, and none is)."""
    log = logging.getLogger(getattr(callback, "__module__", None) or __name__)

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            callback(*args, **kwargs)
        except Exception:
            log.exception("MQTT callback %s failed", getattr(callback, "__name__", callback))

    return wrapper  # type: ignore[return-value]


def utf8_topic(msg: mqtt.MQTTMessage, on_bad: Callable[[bytes], None]) -> str | None:
    """The message's topic, or None after `on_bad(first bytes)` when it is not UTF-8. paho decodes
    `msg.topic` on every read and raises UnicodeDecodeError for such a PUBLISH, which a broker
    should have refused (MQTT 5 §1.5.4) but a lenient one forwards."""
    try:
        return msg.topic
    except UnicodeDecodeError:
        on_bad(bytes(msg._topic[:BAD_TOPIC_SHOWN]))
        return None


@logged_callback
def no_delay(_client: mqtt.Client, _userdata: object, sock: object) -> None:
    """TCP_NODELAY: with Nagle, a PUBLISH written right after another packet (a command after a
    PUBACK, a reply after the command's) waits for the broker's delayed ACK, ~40 ms on Linux."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
    except (OSError, AttributeError) as exc:  # a non-TCP socket (a unix one, a websocket)
        logger.debug("TCP_NODELAY not set on the MQTT socket: %s", exc)


# paho internals `PromptClient` relies on; checked once, so an upgrade that renames them turns
# `write_now` into a no-op (paho's network thread writes, as before) instead of breaking writes.
PROMPT_WRITES = all(hasattr(mqtt.Client, n) for n in ("_packet_write", "_sock_recv", "_sock_close"))


class PromptClient(mqtt.Client):
    """A client whose latency-critical publishes (command requests, command replies) leave on
    the thread that makes them. In paho's threaded mode a packet queued by another thread
    waits for the network thread to wake up (a byte on its socket pair), and then for the
    interpreter, which the publishing thread and whatever it woke keep for a while; under
    gevent the network greenlet also queues behind every other ready greenlet (the gateway's
    Socket.IO pushes).

    `write_now` writes paho's queue on the calling thread. One lock is held around every
    write of the queue, every read of the socket and its closing, so packets never
    interleave and a TLS connection never reads and writes at once (OpenSSL does not allow
    that on one connection); paho's network thread takes the same lock for its own writes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before paho's own __init__: its __del__ closes the socket even after a failed one.
        self._io_lock = threading.RLock()
        super().__init__(*args, **kwargs)
        # Instance attributes: the rest of what `write_now` relies on.
        self.prompt = PROMPT_WRITES and all(
            hasattr(self, n) for n in ("_sock", "_in_callback_mutex", "_out_packet")
        )

    def _packet_write(self) -> MQTTErrorCode:
        with self._io_lock:
            return super()._packet_write()

    def _sock_recv(self, bufsize: int) -> bytes:
        with self._io_lock:
            return super()._sock_recv(bufsize)

    def _sock_close(self) -> None:
        with self._io_lock:
            super()._sock_close()

    def write_now(self) -> bool:
        """Write what paho has queued, now, on this thread; False when it left that to the
        network thread, as paho does without this. It never waits: not while another thread
        reads or writes (that one, or the network thread it woke, writes the packet too), and
        not inside a paho callback, where a QoS 0 packet's write would wait for paho's
        callback lock, held by the callback itself."""
        if not self.prompt or self._in_callback_mutex.locked():
            return False
        if not self._io_lock.acquire(blocking=False):
            return False
        try:
            if self._sock is None:  # not connected: paho keeps the queue for the connection
                return False
            super()._packet_write()
            return True
        finally:
            self._io_lock.release()


def build_client(
    settings: ServiceSettings,
    client_id: str,
    will: Will,
    queue_limit: int,
    backoff: Backoff,
    client_class: type[C],
) -> C:
    """A `client_class` (paho's `Client` or a subclass) set up, not connected. The caller adds
    its callbacks (each through `logged_callback`), then `connect_async` and `loop_start`, so a
    broker that is down at start-up is retried rather than fatal. Reads the TLS files for
    `mqtts://`."""
    url = settings.mqtt
    client = client_class(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    # The callbacks log through `logged_callback`; this keeps paho's loop going if one ever is not.
    client.suppress_exceptions = True
    if url.username:
        client.username_pw_set(url.username, url.password)
    if url.tls:
        # paho's context: the newest TLS the library offers, the broker's certificate and host
        # name checked; the system's CAs unless `KVMSUP_MQTT_CA` names one.
        client.tls_set(
            ca_certs=_path(settings.mqtt_ca),
            certfile=_path(settings.mqtt_cert),
            keyfile=_path(settings.mqtt_key),
        )
    client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    # paho's default keeps every QoS 1 message without limit while offline and sends them all
    # late; bounded, `publish` refuses (MQTT_ERR_QUEUE_SIZE) what comes beyond.
    client.max_queued_messages_set(queue_limit)
    min_delay, max_delay = backoff.draw()
    client.reconnect_delay_set(min_delay=min_delay, max_delay=max_delay)
    client.on_socket_open = no_delay
    return client


def _path(value: object | None) -> str | None:
    return str(value) if value else None
