"""`PromptClient.write_now` against a real Mosquitto over plain TCP: threads writing paho's
queue themselves while its network thread reads a flood lose, cut, merge or reorder nothing.
(The TLS run, where OpenSSL forbids a read and a write at once, is in
test_broker_production.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shared.mqtt import PromptClient
from tests.support.broker import Broker
from tests.support.gateway import wait_until
from tests.support.prompt_flood import BIG, run_floods

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]


def _connected(client: mqtt.Client, broker: Broker) -> mqtt.Client:
    client.connect("127.0.0.1", broker.port, keepalive=30)
    client.loop_start()
    return client


@pytest.fixture
def pair(broker: Broker) -> Iterator[tuple[PromptClient, mqtt.Client]]:
    writer = _connected(
        PromptClient(CallbackAPIVersion.VERSION2, client_id="w", protocol=mqtt.MQTTv5), broker
    )
    reader = _connected(
        mqtt.Client(CallbackAPIVersion.VERSION2, client_id="r", protocol=mqtt.MQTTv5), broker
    )
    yield writer, reader  # type: ignore[misc]
    for c in (writer, reader):
        c.disconnect()
        c.loop_stop()


def test_threads_writing_themselves_lose_and_reorder_nothing(
    pair: tuple[PromptClient, mqtt.Client],
) -> None:
    writer, reader = pair
    # Each round is short: the race it looks for needs many chances.
    run_floods(writer, reader, "kvmsup/h1/cmd", "kvmsup/h1/reply/gw", rounds=5)


def test_big_messages_written_in_parts_never_interleave(
    pair: tuple[PromptClient, mqtt.Client],
) -> None:
    writer, reader = pair
    run_floods(writer, reader, "kvmsup/big/cmd", "kvmsup/big/reply/gw", rounds=3, **BIG)


def test_a_write_from_inside_a_callback_is_left_to_the_network_thread(
    pair: tuple[PromptClient, mqtt.Client],
) -> None:
    """Inside a callback paho holds its callback lock, which a QoS 0 write takes again: the
    callback's write_now leaves the writing to the network thread (no self-deadlock), and the
    message still goes out, QoS 0 or 1."""
    writer, reader = pair
    got: list[bytes] = []
    answered: list[bool] = []
    reader.on_message = lambda _c, _u, msg: got.append(bytes(msg.payload))

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        writer.publish("kvmsup/h1/reply/gw", b"q0-" + msg.payload, qos=0)
        writer.publish("kvmsup/h1/reply/gw", b"q1-" + msg.payload, qos=1)
        answered.append(writer.write_now())

    writer.on_message = on_message
    subscribed = []
    writer.on_subscribe = reader.on_subscribe = lambda *_a: subscribed.append(1)
    writer.subscribe("kvmsup/h1/cmd", qos=1)
    reader.subscribe("kvmsup/h1/reply/gw", qos=1)
    wait_until(lambda: len(subscribed) == 2, 10)
    reader.publish("kvmsup/h1/cmd", b"ping", qos=1)
    wait_until(lambda: sorted(got) == [b"q0-ping", b"q1-ping"], 10)
    assert answered == [False]
