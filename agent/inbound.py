"""Messages from the broker: requests admitted on paho's thread, the rest on one dispatcher."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from functools import partial

from agent.bus import Inbound
from agent.homeassistant.sync import HomeAssistantPublisher
from agent.publisher import Publisher
from shared.topics import Topics

logger = logging.getLogger(__name__)

CONNECTED = Inbound("", b"", False)  # marker queued by the bus after every CONNACK


def keep_going(name: str, fn: Callable[[], object]) -> None:
    """Runs one iteration of a long-lived thread: whatever it raises is logged and the loop goes
    on. Escaping the thread's body, it would end that thread, and with it the ticks or the
    events."""
    try:
        fn()
    except Exception:
        logger.exception("%s failed", name)


class InboundRouter:
    """Where each message of the agent's subscriptions goes. `on_connected` runs on the
    dispatcher after every MQTT connect (the service's republish)."""

    def __init__(
        self,
        host: str,
        topics: Topics,
        on_command: Callable[[Inbound], None],
        on_set: Callable[[str, Inbound], None],
        publisher: Publisher,
        ha: HomeAssistantPublisher | None,
        on_connected: Callable[[], None],
    ) -> None:
        self.host = host
        self.topics = topics
        self.on_command = on_command  # the commands' intake: a `cmd` request
        self.on_set = on_set  # and a plain `set` word, with its VM
        self.publisher = publisher
        self.ha = ha
        self.on_connected = on_connected
        self._queue: queue.Queue[Inbound] = queue.Queue(maxsize=10_000)

    def enqueue(self, msg: Inbound) -> None:
        """On paho's thread: never blocks, never calls libvirt."""
        if self.ha is not None and msg.topic == self.ha.status_topic:
            # Handled here, on paho's thread (it only counts or sets a flag): a storm of these
            # never fills the queue that commands wait in.
            self.ha.on_status(msg.payload, msg.retain)
            return
        parsed = self.topics.parse(msg.topic)
        if parsed is not None and parsed.kind in ("cmd", "vm_set") and parsed.host == self.host:
            # Requests are admitted right here: decoding one and queuing its job never waits
            # (libvirt is called on the executor's workers), so a hop through the dispatcher
            # would only add a thread switch to every command's round trip.
            keep_going(f"message on {msg.topic!r}", partial(self.handle, msg))
            return
        try:
            self._queue.put_nowait(msg)
        except queue.Full:
            logger.error("inbound queue full: dropped a message on %s", msg.topic)

    def run(self, stop: threading.Event) -> None:
        """The `mqtt-dispatch` thread's body."""
        while not stop.is_set():
            try:
                msg = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            keep_going(f"message on {msg.topic!r}", partial(self.handle, msg))

    def handle(self, msg: Inbound) -> None:
        if msg is CONNECTED:
            self.on_connected()
            return
        parsed = self.topics.parse(msg.topic)
        if parsed is None or parsed.host != self.host:
            logger.debug("ignored message on %s", msg.topic)
            return
        if parsed.kind == "cmd":
            self.on_command(msg)
        elif parsed.kind == "vm_set" and parsed.uuid:
            self.on_set(parsed.uuid, msg)
        elif parsed.kind == "vm_state" and parsed.uuid and msg.retain and msg.payload:
            self.publisher.saw_retained_state(parsed.uuid)
