"""Production mode as docker/README.md's first start makes it: broker users and ACL from
broker/provision.sh, a CA and the broker's certificate made here with openssl, MQTT over TLS
between the containers; the ACL in force, Home Assistant's user served the discovery configs;
the broker refusing to start without its secrets. Then restarts: the gateway's jobs survive
`restart gateway`, the broker's retained messages `down` and `up`, and a kill -9 of the agent's
process gives its will and the restart policy brings it back."""

from __future__ import annotations

import json
import os
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests

from tests.container.conftest import BIND, PROJECT, agent_override, base_env
from tests.support.containers import ROOT, Stack, sh
from tests.support.gateway import wait_until
from tests.support.testdriver import TestDriverDaemon

pytestmark = [pytest.mark.container, pytest.mark.timeout(2400)]

URL = f"http://{BIND}:5000"
SECRETS = {name: secrets.token_hex(16) for name in ("agent", "other", "gateway", "ha")}


def make_certificates(out: Path) -> None:
    """A private CA and the broker's certificate for `broker` (the name the containers dial)
    and the tier's published address (the test's own clients)."""

    def ssl_(*args: str) -> None:
        sh(["openssl", *args], timeout=60)

    ssl_("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=kvmsup test CA", "-keyout", str(out / "ca.key"),
         "-out", str(out / "ca.crt"))  # fmt: skip
    ssl_("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=broker",
         "-keyout", str(out / "server.key"), "-out", str(out / "server.csr"))  # fmt: skip
    (out / "san.ext").write_text(f"subjectAltName=DNS:broker,IP:{BIND}\n")
    ssl_("x509", "-req", "-in", str(out / "server.csr"), "-CA", str(out / "ca.crt"),
         "-CAkey", str(out / "ca.key"), "-CAcreateserial", "-days", "2",
         "-extfile", str(out / "san.ext"), "-out", str(out / "server.crt"))  # fmt: skip
    for leftover in ("ca.key", "server.csr", "san.ext", "ca.srl"):
        (out / leftover).unlink(missing_ok=True)


def provision(work: Path) -> dict[str, str]:
    """docker/README.md's steps 1-3: users and ACL, certificates, ownership, `.env` values."""
    env = base_env(work)
    out = work / "broker-secrets"
    sh([str(ROOT / "broker/provision.sh"), "--out", str(out),
        "--agent", f"ct-host:{SECRETS['agent']}", "--agent", f"other-host:{SECRETS['other']}",
        "--gateway", f"gateway-1:{SECRETS['gateway']}",
        "--homeassistant", f"homeassistant:{SECRETS['ha']}"])  # fmt: skip
    make_certificates(out)
    sh(["chown", "-R", "1883:1883", str(out)])
    sh(["install", "-D", "-m", "0644", str(out / "ca.crt"), str(work / "mqtt-ca/ca.crt")])
    return env | {
        "KVMSUP_GATEWAY_ID": "gateway-1",
        "KVMSUP_GATEWAY_MQTT_URL": f"mqtts://gateway-1:{SECRETS['gateway']}@broker:8883",
        "KVMSUP_AGENT_MQTT_URL": f"mqtts://ct-host:{SECRETS['agent']}@broker:8883",
    }


@pytest.fixture(scope="module")
def prod_stack(
    images: None, host_libvirtd: TestDriverDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("prod")
    stack = Stack(PROJECT, work, provision(work), [agent_override(work, host_libvirtd)])
    stack.down()
    stack.compose("up", "-d")
    try:
        wait_for_host(stack, online=True)
    except AssertionError:
        logs = stack.logs("broker") + stack.logs("gateway") + stack.logs("agent")
        raise AssertionError(logs) from None
    yield stack
    stack.down()


def api(stack: Stack, method: str, path: str) -> requests.Response:
    token = stack.env["KVMSUP_API_TOKENS"].rsplit(":", 1)[1]
    headers = {"Authorization": f"Bearer {token}"}
    return requests.request(method, URL + path, headers=headers, timeout=30)


def wait_for_host(stack: Stack, online: bool, timeout: float = 90) -> None:
    def seen() -> bool:
        body = api(stack, "GET", "/health").json()
        return bool(body["broker_connected"]) and body["hosts_online"] == int(online)

    wait_until(seen, timeout=timeout, every=0.5)


class TlsClient:
    """An MQTT v5 client over TLS to the published port, as Home Assistant connects."""

    def __init__(self, work: Path, user: str, secret: str, topic: str) -> None:
        self.messages: dict[str, bytes] = {}
        self.log: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(user, secret)
        self.client.tls_set(
            ca_certs=str(work / "mqtt-ca/ca.crt"), tls_version=ssl.PROTOCOL_TLS_CLIENT
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect(BIND, 8883, keepalive=30)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages[msg.topic] = bytes(msg.payload)
            self.log.append((msg.topic, bytes(msg.payload)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_tls_between_containers_and_home_assistant_sees_discovery(prod_stack: Stack) -> None:
    logs = prod_stack.logs("broker")
    assert "Opening ipv4 listen socket on port 8883" in logs, logs
    assert "WARNING" not in logs
    health = api(prod_stack, "GET", "/health").json()
    assert health["status"] == "healthy" and health["libvirt_connected"] is True, health
    ha = TlsClient(prod_stack.work, "homeassistant", SECRETS["ha"], "homeassistant/#")
    try:
        configs = wait_until(
            lambda: [t for t in ha.messages if "kvmsup_ct-host" in t and t.endswith("/config")],
            timeout=30,
        )
        assert any(json.loads(ha.messages[t]) for t in configs)
    finally:
        ha.close()


PUBLISH = """
import sys, time, paho.mqtt.client as m
codes = {}
c = m.Client(m.CallbackAPIVersion.VERSION2, client_id="other-host", protocol=m.MQTTv5)
c.username_pw_set("other-host", sys.argv[1])
c.tls_set(ca_certs="/run/kvmsup/mqtt-ca/ca.crt")
c.on_publish = lambda cl, ud, mid, rc, props: codes.__setitem__(mid, rc.value)
c.connect("broker", 8883)
c.loop_start()
own = c.publish("kvmsup/v1/other-host/events", b"{}", qos=1).mid
forged = b'{"v":1,"host":"ct-host","online":false,"ts":"2026-01-01T00:00:00Z"}'
other = c.publish("kvmsup/v1/ct-host/status", forged, qos=1, retain=True).mid
deadline = time.time() + 10
while len(codes) < 2 and time.time() < deadline:
    time.sleep(0.1)
print(codes.get(own), codes.get(other))
"""


def test_the_acl_refuses_another_hosts_topics(prod_stack: Stack) -> None:
    """A container holding another agent's credentials publishes on its own topics, and is
    refused on ct-host's: the forged offline status never reaches anyone."""
    out = prod_stack.compose(
        "run", "--rm", "--no-deps", "-T", "gateway", "python3", "-c", PUBLISH, SECRETS["other"]
    )
    own, forged = out.stdout.split()[-2:]
    assert own in ("0", "16"), out.stdout  # success / no matching subscribers
    assert forged == "135", out.stdout  # not authorized
    time.sleep(1)
    assert api(prod_stack, "GET", "/health").json()["hosts_online"] == 1


def fixed(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What an audit entry records of a finished command: who, what, when, and its result."""
    return tuple(entry[k] for k in ("id", "ts", "by", "host", "vm", "action", "result"))


def test_gateway_restart_keeps_jobs_and_audit(prod_stack: Stack) -> None:
    response = api(prod_stack, "POST", "/vm/test/suspend?wait=20")
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded", job

    # The audit is written by the store's writer thread, in batches: the job's final row may
    # reach it a moment after the answer. Read it once it has, so the restart is what is tested.
    def audited() -> dict[str, Any] | None:
        body: dict[str, Any] = api(prod_stack, "GET", "/audit").json()
        rows = [e for e in body["audit"] if e["id"] == job["id"]]
        return body if rows and rows[0]["result"] == "succeeded" else None

    audit_before = wait_until(audited, timeout=15)
    prod_stack.compose("restart", "gateway")
    wait_for_host(prod_stack, online=True)
    again = api(prod_stack, "GET", f"/jobs/{job['id']}")
    assert again.status_code == 200 and again.json()["status"] == "succeeded", again.text
    after = api(prod_stack, "GET", "/audit").json()
    assert [fixed(e) for e in after["audit"]] == [fixed(e) for e in audit_before["audit"]]
    api(prod_stack, "POST", "/vm/test/resume?wait=20").raise_for_status()


def is_will(payload: bytes) -> bool:
    """The agent's MQTT will (SPEC §3): offline, and nothing else said (every field null)."""
    body = json.loads(payload)
    return body.get("online") is False and body.get("agent_version") is None


def test_kill_9_of_the_agent_gives_its_will_and_a_restart(prod_stack: Stack) -> None:
    # Home Assistant's user: a client of its own (the broker takes usernames as client ids).
    ha = TlsClient(prod_stack.work, "homeassistant", SECRETS["ha"], "kvmsup/v1/ct-host/status")
    try:
        # The retained online status first: the subscription is in place.
        wait_until(lambda: ha.log, timeout=15)
        info = prod_stack.inspect("agent")
        restarts = info["RestartCount"]
        os.kill(info["State"]["Pid"], 9)
        try:
            wait_until(lambda: any(is_will(payload) for _, payload in ha.log), timeout=30)
        except AssertionError:
            raise AssertionError((ha.log, prod_stack.logs("broker")[-3000:])) from None
        wait_until(lambda: prod_stack.inspect("agent")["RestartCount"] > restarts, timeout=60)
        wait_until(lambda: json.loads(ha.log[-1][1]).get("online") is True, timeout=60)
    finally:
        ha.close()
    wait_for_host(prod_stack, online=True)


def test_down_and_up_keep_the_brokers_retained_messages(prod_stack: Stack) -> None:
    prod_stack.compose("down")  # the volumes stay
    prod_stack.compose("up", "-d", "--no-deps", "broker")
    ha = TlsClient(prod_stack.work, "homeassistant", SECRETS["ha"], "homeassistant/#")
    try:
        # Only the broker runs: what Home Assistant is served now, the broker kept on disk.
        wait_until(lambda: [t for t in ha.messages if "kvmsup_ct-host" in t], timeout=30)
    finally:
        ha.close()
    prod_stack.compose("up", "-d")
    wait_for_host(prod_stack, online=True)


def test_without_its_secrets_the_broker_refuses_to_start(images: None, tmp_path: Path) -> None:
    stack = Stack(PROJECT, tmp_path, base_env(tmp_path))  # an empty secrets directory
    out = stack.compose("run", "--rm", "--no-deps", "-T", "broker", timeout=120, check=False)
    assert out.returncode == 78, out.stdout + out.stderr
    said = out.stdout + out.stderr
    assert "REFUSING TO START" in said
    assert "Missing or unreadable in /mosquitto/secrets/: passwd acl ca.crt server.crt" in said
