"""Garbage on the agent's `cmd` and `vm/<uuid>/set` topics (issue 8), on a real Mosquitto: not
JSON, the wrong schema, 1 MiB, NaN, deep nesting, invalid UTF-8 (in the payload and in the topic
name), retained junk. Each kind is logged, a flood of one kind only a few times (with the count),
nothing crashes, and the next good command is answered.
"""

from __future__ import annotations

import json
import socket
import struct
import uuid as uuidlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.agentctl import DEMO_A, AgentClient
from tests.support.mqtt import Recorder
from tests.support.procs import Service, demo_node_uri

pytestmark = pytest.mark.service

WEB = DEMO_A["web-01"]
OFF = DEMO_A["shared-vm"]


def _request(**over: Any) -> dict[str, Any]:
    body = {
        "v": 1,
        "id": uuidlib.uuid4().hex,
        "action": "start",
        "vm": WEB,
        "params": {},
        "by": "tester",
        "not_after": (datetime.now(UTC) + timedelta(seconds=30)).isoformat(),
    }
    return body | over


def _nan_request() -> bytes:
    text = json.dumps(_request(action="shutdown", params={"timeout_s": 5.0}))
    return text.replace("5.0", "NaN").encode()


CMD_GARBAGE: dict[str, bytes] = {
    "not JSON": b"this is { not json",
    "wrong schema": b'{"hello": "world", "v": "one"}',
    "JSON that is no object": b"[1, 2, 3]",
    "1 MiB": b'{"v":1,"id":"' + b"x" * (1 << 20) + b'"}',
    "NaN": _nan_request(),
    "NaN everywhere": b'{"v": NaN, "id": NaN, "action": NaN, "vm": NaN, "not_after": NaN}',
    "deep nesting": b'{"params":' * 5_000 + b"1" + b"}" * 5_000,  # under the 64 KiB cap
    "invalid UTF-8": b'{"v":1,"id":"\xff\xfe\xfd","action":"start"}',
    "empty": b"",
}
# The same kinds again, in other bytes: counted, not logged a second time.
CMD_REPEATS: dict[str, bytes] = {
    "binary (not UTF-8 again)": bytes(range(256)) * 8,
    "not JSON again": b"this is { also not json",
    "2 MiB": b"[" + b"0," * (1 << 20) + b"0]",
}
SET_GARBAGE: dict[str, bytes] = {
    "not an action": b"EXPLODE",
    "JSON": b'{"state": "ON"}',
    "1 MiB": b"O" * (1 << 20),
    "NaN": b"NaN",
    "deep nesting": b"[" * 50_000 + b"]" * 50_000,
    "invalid UTF-8": b"O\xffN",
    "empty": b"",
}


def _log_lines(agent: Service, since: int, needle: str) -> list[str]:
    return [line for line in agent.output()[since:].splitlines() if needle in line]


def _answered(client: AgentClient) -> None:
    """A good command after the garbage is answered (running VM: succeeded, unchanged)."""
    reply = client.call("start", WEB, timeout=20)
    assert reply["status"] == "succeeded", reply


def _raw_publish(port: int, topic: bytes, payload: bytes) -> bool:
    """An MQTT 3.1.1 PUBLISH written by hand: paho cannot send a topic that is not UTF-8.
    True when the broker closed the connection on it (as it must)."""

    def packet(kind: int, body: bytes) -> bytes:
        size, length = len(body), b""
        while True:
            byte, size = size % 128, size // 128
            length += bytes([byte | (0x80 if size else 0)])
            if not size:
                return bytes([kind]) + length + body

    def text(b: bytes) -> bytes:
        return struct.pack("!H", len(b)) + b

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        connect = text(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", 30) + text(b"raw-junk")
        sock.sendall(packet(0x10, connect))
        assert sock.recv(4)[:1] == b"\x20"  # CONNACK
        sock.sendall(packet(0x30, text(topic) + payload))
        try:
            return sock.recv(16) == b""
        except (ConnectionResetError, TimeoutError):
            return True


@pytest.fixture
def agent_and_client(broker, recorder: Recorder, start_agent) -> tuple[Service, AgentClient]:
    client = AgentClient(recorder, "demo-a")
    cmd = client.topics.cmd("demo-a")
    # Retained junk waiting on both topics before the agent connects.
    recorder.publish(cmd, b"retained junk \xff", retain=True)
    recorder.publish(client.topics.vm_set("demo-a", WEB), b"\x00retained", retain=True)
    agent = start_agent("demo-a", demo_node_uri("demo-a"))
    client.wait_state(WEB, "running", timeout=20)
    return agent, client


def test_garbage_on_cmd_is_refused_logged_and_the_next_command_answered(
    broker, agent_and_client: tuple[Service, AgentClient]
) -> None:
    agent, client = agent_and_client
    assert _log_lines(agent, 0, "retained"), agent.output()[-2000:]
    _answered(client)
    cmd = client.topics.cmd("demo-a")
    for kind, payload in CMD_GARBAGE.items():
        mark = len(agent.output())
        request_id = uuidlib.uuid4().hex
        client.request("start", WEB, request_id=request_id, raw=payload)
        reply = client.wait_final(request_id, timeout=20)
        assert reply["status"] == "rejected", (kind, reply)
        assert reply["error"]["code"] in ("bad_request", "too_large"), (kind, reply)
        _answered(client)
        assert _log_lines(agent, mark, "refused"), (kind, agent.output()[mark:][-2000:])
        assert agent.alive(), kind
    for kind, payload in CMD_REPEATS.items():
        mark = len(agent.output())
        request_id = uuidlib.uuid4().hex
        client.request("start", WEB, request_id=request_id, raw=payload)
        assert client.wait_final(request_id, timeout=20)["status"] == "rejected", kind
        _answered(client)
        assert not _log_lines(agent, mark, "refused"), (kind, agent.output()[mark:][-2000:])
    # Without a response topic or correlation (a plain MQTT client): logged, nothing to answer.
    client.rec.publish(cmd, b"\xff\xfe junk")
    # Live retained junk is refused as well.
    client.rec.publish(cmd, b"{junk", retain=True)
    client.rec.publish(cmd, b"", retain=True)  # clears the retained junk
    _answered(client)

    # A flood of one kind: counted, logged a few times, not 300.
    mark = len(agent.output())
    for _ in range(300):
        client.rec.publish(cmd, b"flood", qos=0)
    _answered(client)
    flood_lines = _log_lines(agent, mark, "refused")
    # Logged the 1st, 10th and 100th time of its kind, with the count.
    assert 1 <= len(flood_lines) <= 3, flood_lines
    assert "refused 100 times like this" in flood_lines[-1], flood_lines
    assert agent.alive()


def test_garbage_on_set_and_in_topic_names_is_survived(
    broker, agent_and_client: tuple[Service, AgentClient]
) -> None:
    agent, client = agent_and_client
    set_topic = client.topics.vm_set("demo-a", WEB)
    mark = len(agent.output())
    for payload in SET_GARBAGE.values():
        client.rec.publish(set_topic, payload)
        _answered(client)
    # One line per kind of refusal: every unknown word is one kind, bad UTF-8 another.
    set_lines = _log_lines(agent, mark, "bad set on")
    assert any("refused unknown_action" in line for line in set_lines), set_lines
    assert any("refused bad_request" in line for line in set_lines), set_lines
    assert len(set_lines) <= 3, set_lines
    # Not a VM this host has, and not a UUID at all.
    client.rec.publish(client.topics.vm_set("demo-a", str(uuidlib.uuid4())), b"ON")
    client.rec.publish(f"{client.topics.root}/demo-a/vm/not-a-uuid/set", b"ON")
    # A topic name that is not UTF-8: the broker drops the sender; the agent never sees it.
    bad_topic = f"{client.topics.root}/demo-a/vm/".encode() + b"\xff\xfe/set"
    assert _raw_publish(broker.port, bad_topic, b"ON")
    bad_cmd = f"{client.topics.root}/demo-a/".encode() + b"cmd\xc3\x28"
    assert _raw_publish(broker.port, bad_cmd, b"{}")
    _answered(client)
    # The next good `set` is carried out.
    client.rec.publish(client.topics.vm_set("demo-a", OFF), b"ON")
    client.wait_state(OFF, "running", timeout=20)
    assert agent.alive()
