"""The shared paho setup (`shared/mqtt.py`), built from each service's settings: no broker, no
socket, no thread. A client is built and looked at, never connected."""

from __future__ import annotations

import logging
import os
import random
import socket
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTErrorCode

from agent.bus import BACKOFF as AGENT_BACKOFF
from agent.bus import Bus as AgentBus
from agent.bus import Inbound, Outbound
from agent.config import AgentSettings
from gateway.adapters.bus import BACKOFF as GATEWAY_BACKOFF
from gateway.adapters.bus import OUTGOING_QUEUE
from gateway.adapters.bus import Bus as GatewayBus
from gateway.config import Settings as GatewaySettings
from shared.mqtt import (
    PROMPT_WRITES,
    Backoff,
    PromptClient,
    Will,
    build_client,
    logged_callback,
    no_delay,
    utf8_topic,
)

pytestmark = pytest.mark.unit

WILL = Will("kvmsup/v1/h1/status", b'{"online":false}')
BAD_TOPIC = b"kvmsup/v1/\xff\xfe/status"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the environment only: start every test from an empty one."""
    for name in list(os.environ):
        if name.startswith("KVMSUP_") or name == "LIBVIRT_URI":
            monkeypatch.delenv(name)
    monkeypatch.setattr(socket, "gethostname", lambda: "node1")


@pytest.fixture
def tls_loads(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the client's TLS context was asked to load, instead of reading the files."""
    loads: dict[str, Any] = {}

    def verify(_ctx: ssl.SSLContext, cafile: str | None = None, *_a: Any, **_k: Any) -> None:
        loads["ca"] = cafile

    def chain(_ctx: ssl.SSLContext, certfile: str, keyfile: str | None = None, *_a: Any) -> None:
        loads["cert"], loads["key"] = certfile, keyfile

    def system(_ctx: ssl.SSLContext, *_a: Any) -> None:
        loads["system"] = True

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", verify)
    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", chain)
    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", system)
    return loads


def _agent_client(**settings: Any) -> mqtt.Client:
    return build_client(
        AgentSettings(**settings), "kvmsup-agent-node1", WILL, 10, AGENT_BACKOFF, mqtt.Client
    )


def test_a_client_carries_the_will_the_credentials_and_mqtt_v5() -> None:
    client = _agent_client(mqtt_url="mqtt://agent:s3cret@broker.lan:1884")
    assert client.protocol == mqtt.MQTTv5
    assert (client.username, client.password) == ("agent", "s3cret")
    assert client.will_topic == "kvmsup/v1/h1/status"
    assert client.will_payload == b'{"online":false}'
    assert (client._will_qos, client._will_retain) == (1, True)  # retained, QoS 1: SPEC §3
    assert client.suppress_exceptions is True
    assert client.on_socket_open is no_delay
    assert client._ssl_context is None  # mqtt:// stays plain


def test_a_client_without_credentials_sends_none() -> None:
    client = _agent_client(mqtt_url="mqtt://broker.lan")
    assert client.username is None and client.password is None


def test_mqtts_checks_the_broker_with_the_given_ca_and_client_certificate(
    tls_loads: dict[str, Any],
) -> None:
    client = _agent_client(
        mqtt_url="mqtts://agent:pw@broker.lan",
        mqtt_ca="/etc/kvmsup/ca.pem",
        mqtt_cert="/etc/kvmsup/agent.pem",
        mqtt_key="/etc/kvmsup/agent.key",
    )
    context = client._ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True
    assert tls_loads == {
        "ca": "/etc/kvmsup/ca.pem",
        "cert": "/etc/kvmsup/agent.pem",
        "key": "/etc/kvmsup/agent.key",
    }


def test_mqtts_without_a_ca_trusts_the_system_store(tls_loads: dict[str, Any]) -> None:
    settings = GatewaySettings(mqtt_url="mqtts://broker.lan", gateway_id="gw")
    client = build_client(settings, "gw", WILL, 100, GATEWAY_BACKOFF, mqtt.Client)
    assert client._ssl_context is not None
    assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert client._ssl_context.check_hostname is True
    assert tls_loads == {"system": True}


def test_the_outgoing_queue_refuses_what_comes_beyond_its_bound() -> None:
    """Offline, QoS 1 messages wait in paho up to the bound; the next one is refused at once
    rather than kept without limit and sent late."""
    client = _agent_client()
    results = [client.publish(f"kvmsup/v1/node1/t{i}", b"x", qos=1).rc for i in range(11)]
    assert results[:10] == [MQTTErrorCode.MQTT_ERR_NO_CONN] * 10  # queued for the reconnect
    assert results[10] == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE


def test_the_agent_bus_says_so_when_its_offline_queue_is_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = _agent_bus(offline_queue=10)
    sent = [bus.publish(Outbound(f"kvmsup/v1/node1/r{i}", b"{}", 1, False)) for i in range(11)]
    assert sent == [True] * 10 + [False]  # the first ten wait in paho for the reconnect
    assert "publish to kvmsup/v1/node1/r10 refused: Message queue full" in caplog.text
    assert "r9 refused" not in caplog.text  # a queued message is not reported as refused


def test_reconnect_delays_are_drawn_per_process_within_each_services_range() -> None:
    rng = random.Random(7)
    drawn = {AGENT_BACKOFF.draw(rng) for _ in range(400)}
    assert {low for low, _ in drawn} == {1, 2}
    assert {high for _, high in drawn} == {8, 9, 10, 11}
    drawn = {GATEWAY_BACKOFF.draw(rng) for _ in range(400)}
    assert {low for low, _ in drawn} == {1}
    assert {high for _, high in drawn} == {4, 5, 6, 7, 8}
    client = _agent_client()
    assert client._reconnect_min_delay in (1, 2)
    assert client._reconnect_max_delay in (8, 9, 10, 11)


def test_a_fixed_backoff_is_what_paho_gets() -> None:
    client = build_client(
        AgentSettings(), "c", WILL, 10, Backoff(min_delay=(3, 3), max_delay=(9, 9)), mqtt.Client
    )
    assert (client._reconnect_min_delay, client._reconnect_max_delay) == (3, 9)


def test_guarded_logs_what_a_callback_raises_with_its_traceback_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[object] = []

    def on_message(_client: object, _userdata: object, msg: object) -> None:
        seen.append(msg)
        raise KeyError("boom")

    wrapped = logged_callback(on_message)
    assert wrapped.__name__ == "on_message"
    with caplog.at_level(logging.ERROR):
        assert wrapped(None, None, "m1") is None  # swallowed
        wrapped(None, None, "m2")
    assert seen == ["m1", "m2"]
    records = [r for r in caplog.records if "MQTT callback on_message failed" in r.getMessage()]
    assert len(records) == 2
    assert records[0].exc_info is not None and records[0].exc_info[0] is KeyError
    assert records[0].name == __name__  # the callback's own module's logger


def test_utf8_topic_reads_a_good_topic_and_reports_a_bad_one() -> None:
    bad: list[bytes] = []
    good = mqtt.MQTTMessage(topic=b"kvmsup/v1/h1/status")
    assert utf8_topic(good, bad.append) == "kvmsup/v1/h1/status" and bad == []
    assert utf8_topic(mqtt.MQTTMessage(topic=BAD_TOPIC), bad.append) is None
    assert bad == [BAD_TOPIC]
    assert utf8_topic(mqtt.MQTTMessage(topic=BAD_TOPIC + b"x" * 1000), bad.append) is None
    assert len(bad[1]) == 256  # a long topic is cut before anyone logs it


def test_no_delay_tolerates_a_socket_without_tcp_options(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="shared.mqtt"):
        no_delay(None, None, object())  # type: ignore[arg-type]  # no setsockopt at all
    assert "TCP_NODELAY not set" in caplog.text


# -- the services' buses, driven through paho's own dispatch (no socket) ----------------------
def _agent_bus(received: list[Inbound] | None = None, **settings: Any) -> AgentBus:
    def on_message(msg: Inbound) -> None:
        if received is None:
            raise RuntimeError("the service's queue broke")
        received.append(msg)

    return AgentBus(
        AgentSettings(**settings),
        client_id="kvmsup-agent-node1",
        will=Outbound(WILL.topic, WILL.payload, 1, True),
        online=lambda: Outbound(WILL.topic, b'{"online":true}', 1, True),
        subscriptions=[],
        on_message=on_message,
        on_connected=lambda: None,
    )


def test_the_agent_bus_builds_its_client_from_its_settings() -> None:
    bus = _agent_bus(mqtt_url="mqtt://node1:pw@broker.lan", offline_queue=250)
    client = bus._client
    assert client._client_id == b"kvmsup-agent-node1"
    assert client.max_queued_messages == 250
    assert client.username == "node1" and client.will_topic == WILL.topic


def test_an_agent_callback_that_raises_is_logged_and_paho_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = _agent_bus()  # its message handler raises
    with caplog.at_level(logging.ERROR):
        bus._client._handle_on_message(mqtt.MQTTMessage(topic=b"kvmsup/v1/node1/cmd"))
    record = next(r for r in caplog.records if "callback _on_message failed" in r.getMessage())
    assert record.name == "agent.bus" and record.exc_info is not None


def test_the_agent_refuses_a_topic_that_is_not_utf8_once_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    received: list[Inbound] = []
    bus = _agent_bus(received)
    with caplog.at_level(logging.WARNING):
        bus._client._handle_on_message(mqtt.MQTTMessage(topic=BAD_TOPIC))
        bus._client._handle_on_message(mqtt.MQTTMessage(topic=b"kvmsup/v1/node1/cmd"))
    assert bus._refusals.counts["topic_not_utf8"] == 1
    assert "not UTF-8" in caplog.text
    assert [m.topic for m in received] == ["kvmsup/v1/node1/cmd"]


def test_the_gateway_bus_builds_its_client_from_its_settings() -> None:
    settings = GatewaySettings(mqtt_url="mqtt://gw:pw@broker.lan", gateway_id="gw1")
    client = GatewayBus(settings, lambda _m: None)._client
    assert type(client).__name__ == "_DrainingClient"
    assert client._client_id == b"kvmsup-gateway-gw1"
    assert client.max_queued_messages == OUTGOING_QUEUE
    assert client.will_topic == "kvmsup/v1/gateway/gw1/status"
    assert b'"online":false' in bytes(client.will_payload or b"")
    assert client.username == "gw" and client.on_socket_open is no_delay


class _WireSocket:
    """Stands for a connected socket: records what is sent (no I/O)."""

    def __init__(self) -> None:
        self.sent = b""

    def send(self, buf: bytes) -> int:
        self.sent += bytes(buf)
        return len(buf)

    def close(self) -> None:
        pass


def _queued_prompt_client() -> tuple[PromptClient, _WireSocket]:
    """A client 'connected' to a recording socket with one packet (a PINGREQ) queued for the
    network thread, as paho's threaded mode leaves what another thread queued."""
    client = build_client(AgentSettings(), "c", WILL, 10, AGENT_BACKOFF, PromptClient)
    wire = _WireSocket()
    client._sock = wire
    client._thread = threading.current_thread()  # threaded mode: queued, not written
    client._packet_queue(0xC0, b"\xc0\x00", 0, 0)
    client._thread = None
    assert wire.sent == b"" and client.want_write()
    return client, wire


def test_both_services_publish_their_latency_critical_messages_promptly() -> None:
    """The paho internals `write_now` relies on are there: a paho upgrade that renamed them
    would silently leave every write to the network thread again."""
    assert PROMPT_WRITES
    assert _queued_prompt_client()[0].prompt
    assert isinstance(_agent_bus([])._client, PromptClient)
    settings = GatewaySettings(mqtt_url="mqtt://broker.lan", gateway_id="gw1")
    assert isinstance(GatewayBus(settings, lambda _m: None)._client, PromptClient)


def test_write_now_writes_the_queue_on_the_calling_thread() -> None:
    client, wire = _queued_prompt_client()
    assert client.write_now() is True
    assert wire.sent == b"\xc0\x00"
    assert not client.want_write()


def test_write_now_leaves_the_write_to_paho_inside_a_callback_or_offline() -> None:
    client, wire = _queued_prompt_client()
    # Inside a callback (paho holds its callback lock): a QoS 0 write would take it again.
    with client._in_callback_mutex:
        assert client.write_now() is False
    assert wire.sent == b"" and client.want_write()
    client._sock = None  # not connected: paho keeps the queue for the connection
    assert client.write_now() is False
    assert client.want_write()
