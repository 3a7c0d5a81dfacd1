"""The production broker (SPEC §1, §7): broker/mosquitto.conf + broker/provision.sh, run for real.

The broker runs broker/mosquitto.conf itself, with only what a test cannot use substituted: the
secrets directory (`/mosquitto/secrets/` → a throwaway CA, server cert and the provisioned
passwd/acl under tmp), the persistence directory and the listener (`listener 8883` → a free
loopback port). One addition: `log_type debug`, so the broker's own "Denied PUBLISH" lines show
that the agent never hits a rule it lacks.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.homeassistant import discovery
from shared.mqtt import PromptClient
from tests.support.agentctl import DEMO_A, DEMO_B
from tests.support.broker import mosquitto_binary
from tests.support.gateway import GatewayProc, wait_until
from tests.support.ports import free_port, wait_port
from tests.support.procs import ROOT, Service, agent_service, demo_node_uri
from tests.support.prompt_flood import BIG, run_floods

pytestmark = pytest.mark.service

PROD_CONF = ROOT / "broker" / "mosquitto.conf"
PROVISION = ROOT / "broker" / "provision.sh"
SECRETS = {
    "demo-a": "a-" + uuid.uuid4().hex,
    "demo-b": "b-" + uuid.uuid4().hex,
    "gw1": "g1-" + uuid.uuid4().hex,
    "gw2": "g2-" + uuid.uuid4().hex,
    "homeassistant": "h-" + uuid.uuid4().hex,
}
ROOT_TOPIC = "kvmsup/v1"
WEB = DEMO_A["web-01"]
OFF = DEMO_A["shared-vm"]
NOT_AUTHORIZED = 0x87
HA = "homeassistant"
_LEGACY_NODE = re.compile(r"'homeassistant/\w+/kvmsup_demo-a_[0-9a-f]{32}/\w+/config'")


@dataclass
class ProdBroker:
    port: int
    ca: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def url(self, user: str) -> str:
        return f"mqtts://{user}:{SECRETS[user]}@127.0.0.1:{self.port}"

    def mark(self) -> int:
        return self.log.stat().st_size

    def logged(self, since: int = 0) -> str:
        """What the broker logged after `mark()` was `since`."""
        with self.log.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def denied(self, user: str, since: int = 0) -> list[str]:
        """The broker's "Denied PUBLISH" lines for `user`, logged after `mark()` was `since`."""
        text = self.logged(since)
        return [line for line in text.splitlines() if f"Denied PUBLISH from {user} " in line]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certs(where: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost (EC keys: fast)."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=kvmsup test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=where,
    )
    _openssl(
        "req",
        *ec,
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=where,
    )
    (where / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        cwd=where,
    )


def provision(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    users = [
        ("--agent", "demo-a"),
        ("--agent", "demo-b"),
        ("--gateway", "gw1"),
        ("--gateway", "gw2"),
        ("--homeassistant", "homeassistant"),
    ]
    args = [arg for flag, name in users for arg in (flag, f"{name}:{SECRETS[name]}")]
    return subprocess.run(
        ["bash", str(PROVISION), "--out", str(out), *args, *extra],
        capture_output=True,
        text=True,
        timeout=30,
    )


def production_conf(secrets: Path, data: Path, port: int) -> str:
    """broker/mosquitto.conf with its paths and port swapped; each swap must hit, or fail."""
    text = PROD_CONF.read_text()
    swaps = [
        ("/mosquitto/secrets/", f"{secrets}/"),
        ("/mosquitto/data/", f"{data}/"),
        ("\nlistener 8883\n", f"\nlistener {port} 127.0.0.1\n"),
    ]
    for old, new in swaps:
        assert old in text, f"broker/mosquitto.conf no longer has {old!r}: update this test"
        text = text.replace(old, new)
    return text + "\nlog_type debug\n"


@pytest.fixture(scope="module")
def prod_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProdBroker]:
    # Started as root, Mosquitto drops to the `mosquitto` user before it reads passwd and acl:
    # pytest's 0700 root-owned tmp tree is closed to it, so root tests use a /tmp dir of their own.
    root_run = os.geteuid() == 0
    base = (
        Path(tempfile.mkdtemp(prefix="kvmsup-prod-broker-"))
        if root_run
        else (tmp_path_factory.mktemp("prod-broker"))
    )
    secrets, data = base / "secrets", base / "data"
    secrets.mkdir()
    data.mkdir()
    make_certs(secrets)
    done = provision(secrets)
    assert done.returncode == 0, done.stderr
    if root_run:
        _owned_by_broker_user(base, secrets, data)
    port = free_port()
    conf = base / "mosquitto.conf"
    conf.write_text(production_conf(secrets, data, port))
    log = base / "mosquitto.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            # Line-buffered: Mosquitto does not flush stdout, and `denied()` reads the log live.
            ["stdbuf", "-oL", mosquitto_binary(), "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(port)
        yield ProdBroker(port, secrets / "ca.crt", log, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if root_run:
            shutil.rmtree(base, ignore_errors=True)


def _owned_by_broker_user(*dirs: Path) -> None:
    """passwd and acl are 0600 (provision.sh): hand them over, as broker/README.md says to."""
    broker_user = pwd.getpwnam("mosquitto")
    for d in dirs:
        for path in (d, *(p for p in d.iterdir() if p.is_file())):
            os.chown(path, broker_user.pw_uid, broker_user.pw_gid)


class Client:
    """A paho MQTT v5 client over TLS: records messages, its CONNACK and each PUBACK's code."""

    def __init__(
        self,
        broker: ProdBroker,
        user: str | None,
        password: str | None = None,
        *,
        client_id: str = "",
        wait: bool = True,
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.connack: ReasonCode | None = None
        self._lock = threading.Lock()
        self._connack = threading.Event()
        self._acks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if user is not None:
            c.username_pw_set(user, SECRETS.get(user) if password is None else password)
        c.tls_set(ca_certs=str(broker.ca), cert_reqs=ssl.CERT_REQUIRED)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_publish = lambda _c, _u, mid, rc, _p: self._record(self._acks, mid, rc)
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self._record(self._subacks, mid, rcs)
        self.client = c
        c.connect("127.0.0.1", broker.port, keepalive=30)
        c.loop_start()
        if wait:
            assert self._connack.wait(10), "no CONNACK"
            assert self.connack is not None and not self.connack.is_failure, self.connack

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if self.connack is None:
            self.connack = reason
        self._connack.set()
        if reason.is_failure:
            self.client.disconnect()  # no retry loop on refused credentials

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(msg)

    def _record(self, into: dict[int, Any], mid: int, value: Any) -> None:
        with self._lock:
            into[mid] = value

    def wait_connack(self, timeout: float = 10.0) -> ReasonCode:
        assert self._connack.wait(timeout), "no CONNACK"
        assert self.connack is not None
        return self.connack

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        rc, mid = self.client.subscribe([(f, 1) for f in filters])
        assert rc == mqtt.MQTT_ERR_SUCCESS and mid is not None
        codes: list[ReasonCode] = wait_until(lambda: self._subacks.get(mid), 5)
        return codes

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> ReasonCode:
        """QoS 1; the PUBACK's reason code (MQTT v5 says why a publish was refused)."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if response_topic:
            props.ResponseTopic = response_topic
            props.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        code: ReasonCode = wait_until(lambda: self._acks.get(info.mid), 5)
        return code

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def topics(self) -> set[str]:
        with self._lock:
            return {m.topic for m in self.messages}

    def wait_for(self, topic: str, check: Any = None, timeout: float = 10.0) -> Any:
        def found() -> Any:
            for m in self.on(topic):
                body = json.loads(m.payload) if m.payload else None
                if check is None or (body is not None and check(body)):
                    return body or m
            return None

        return wait_until(found, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(prod_broker: ProdBroker) -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for c in opened:
        c.close()


@pytest.fixture
def connect(prod_broker: ProdBroker, clients: list[Client]) -> Any:
    def open_client(user: str | None, password: str | None = None, **kw: Any) -> Client:
        c = Client(prod_broker, user, password, **kw)
        clients.append(c)
        return c

    return open_client


@pytest.fixture
def agent_a(tmp_path: Path, prod_broker: ProdBroker) -> Iterator[Service]:
    """The real agent for demo-a, on mqtts:// with the demo-a credentials and the test CA."""
    mark = prod_broker.mark()
    svc = agent_service(
        tmp_path,
        "demo-a",
        prod_broker.url("demo-a"),
        demo_node_uri("demo-a"),
        KVMSUP_MQTT_CA=str(prod_broker.ca),
    ).start()
    yield svc
    svc.stop()
    out = svc.output()
    assert "Traceback" not in out, out[-4000:]
    assert SECRETS["demo-a"] not in out, "the agent logged its MQTT password"
    # One refusal is expected: the agent's probe of the earlier discovery layout, which the
    # per-host ACL closes (agent/homeassistant/sync.py `_migrate`); it then writes nothing there.
    denied = prod_broker.denied("demo-a", mark)
    assert len(denied) <= 1 and all(_LEGACY_NODE.search(d) for d in denied), denied
    if denied:
        assert "nothing moved" in out


def request(action: str, vm: str) -> tuple[str, bytes]:
    """A `cmd` payload as a gateway sends it, and its id."""
    rid = uuid.uuid4().hex
    body = {
        "v": 1,
        "ts": datetime.now(UTC).isoformat(),
        "id": rid,
        "action": action,
        "vm": vm,
        "params": {},
        "by": "test",
        "not_after": (datetime.now(UTC) + timedelta(seconds=30)).isoformat(),
    }
    return rid, json.dumps(body).encode()


def test_agent_over_tls_publishes_status_states_and_every_discovery_config(agent_a, connect):
    gw = connect("gw1")
    gw.subscribe(f"{ROOT_TOPIC}/+/status", f"{ROOT_TOPIC}/+/vm/+/state")
    ha = connect("homeassistant")
    ha.subscribe("homeassistant/#")
    gw.wait_for(f"{ROOT_TOPIC}/demo-a/status", lambda s: s["online"] is True)
    for uid in DEMO_A.values():
        gw.wait_for(f"{ROOT_TOPIC}/demo-a/vm/{uid}/state", lambda s: s["uuid"] is not None)
    # Every config topic the agent builds is one its ACL lets through: all under its node id.
    expected = set(discovery.host_config_topics("demo-a", "homeassistant"))
    for uid in DEMO_A.values():
        expected |= set(discovery.config_topics("demo-a", uid, "homeassistant"))
    wait_until(lambda: expected <= ha.topics(), 10)
    assert {t.split("/")[2] for t in expected} == {"kvmsup_demo-a"}
    # Its probe of the earlier layout was refused (PUBACK 0x87): it knows, and moves on.
    wait_until(lambda: "nothing moved" in agent_a.output(), 10)
    # Nothing outside its node id: another integration's config, for one.
    stranger = connect("demo-b")
    assert stranger.publish("homeassistant/light/kitchen/light/config", "{}").value == 0x87


def test_an_agent_cannot_write_any_config_of_another_host(prod_broker, connect):
    """Issue 14: with demo-a's credentials, a retained config taking over demo-b's VM switch
    (command_topic at another VM's `set`, payload_off DESTROY) is refused in every form."""
    ha = connect("homeassistant")
    ha.subscribe("homeassistant/#")
    attacker = connect("demo-a")
    victim_vm = DEMO_B["shared-vm"]
    hexa = victim_vm.replace("-", "")
    evil = json.dumps(
        {
            "name": "Power",
            "unique_id": f"kvmsup_demo-b_{hexa}_power",
            "command_topic": f"{ROOT_TOPIC}/demo-b/vm/{victim_vm}/set",
            "payload_off": "destroy",
            "device": {"identifiers": [f"kvmsup_vm_demo-b_{hexa}"]},
        }
    )
    targets = discovery.host_config_topics("demo-b", "homeassistant")
    targets += discovery.config_topics("demo-b", victim_vm, "homeassistant")
    targets += discovery.legacy_config_topics("demo-b", victim_vm, "homeassistant")
    targets += [
        f"homeassistant/switch/kvmsup_demo-b_{hexa}/power/config",
        f"homeassistant/switch/kvmsup_demo-b/{hexa}_power/config",
        "homeassistant/switch/kvmsup_demo-b/power/config",
        "homeassistant/device/kvmsup_demo-b/config",
        "homeassistant/switch/kvmsup_demo-b/x/y/config",
    ]
    for topic in targets:
        assert attacker.publish(topic, evil, retain=True).value == NOT_AUTHORIZED, topic
        assert attacker.publish(topic, b"", retain=True).value == NOT_AUTHORIZED, topic
    # Control: the same credentials still write their own host's configs.
    own = discovery.config_topics("demo-a", DEMO_A["web-01"], "homeassistant")[0]
    assert attacker.publish(own, "{}", retain=False).value == 0
    ha.wait_for(own)
    assert not [t for t in ha.topics() if "demo-b" in t], ha.topics()


def test_anonymous_wrong_password_and_plain_tcp_are_refused(prod_broker, connect):
    anonymous = connect(None, wait=False)
    assert anonymous.wait_connack().value in (0x86, 0x87)  # bad credentials / not authorized
    wrong = connect("demo-a", "not-the-secret", wait=False)
    assert wrong.wait_connack().value in (0x86, 0x87)
    unknown = connect("intruder", "whatever", wait=False)
    assert unknown.wait_connack().value in (0x86, 0x87)
    # An MQTT CONNECT in clear on the TLS port gets no CONNACK: the connection is just dropped.
    connect_packet = bytes.fromhex("101000044d5154540402003c0004") + b"test"
    with socket.create_connection(("127.0.0.1", prod_broker.port), timeout=3) as sock:
        sock.sendall(connect_packet)
        try:
            reply = sock.recv(16)
        except (TimeoutError, ConnectionResetError):
            reply = b""
    assert not reply.startswith(b"\x20"), "a plain-TCP client got a CONNACK"


def test_agent_credentials_cannot_write_or_read_another_host(prod_broker, connect):
    watcher = connect("gw1")
    watcher.subscribe(
        f"{ROOT_TOPIC}/+/status", f"{ROOT_TOPIC}/+/vm/+/state", f"{ROOT_TOPIC}/+/events"
    )
    # demo-b is connected under its agent's client id; demo-a borrows that id.
    victim = connect("demo-b", client_id="kvmsup-agent-demo-b")
    victim.subscribe(f"{ROOT_TOPIC}/demo-b/cmd")
    attacker = connect("demo-a", client_id="kvmsup-agent-demo-b")
    fake = json.dumps({"v": 1, "host": "demo-b", "online": False})
    for topic in (
        f"{ROOT_TOPIC}/demo-b/status",
        f"{ROOT_TOPIC}/demo-b/vm/{uuid.uuid4()}/state",
        f"{ROOT_TOPIC}/demo-b/events",
        f"{ROOT_TOPIC}/demo-b/cmd",
        f"{ROOT_TOPIC}/demo-b/vm/{uuid.uuid4()}/set",
        f"{ROOT_TOPIC}/gateway/gw1/status",
    ):
        assert attacker.publish(topic, fake, retain=True).value == NOT_AUTHORIZED, topic
    assert attacker.publish(f"{ROOT_TOPIC}/demo-a/events", "{}").value == 0  # control
    watcher.wait_for(f"{ROOT_TOPIC}/demo-a/events")
    assert not [t for t in watcher.topics() if "/demo-b/" in t], watcher.topics()
    # Mosquitto 2.0 grants every SUBSCRIBE (granted QoS 1) and applies `read` per message.
    codes = attacker.subscribe(f"{ROOT_TOPIC}/demo-b/cmd", f"{ROOT_TOPIC}/+/cmd", "#")
    assert all(not c.is_failure for c in codes)
    rid_b, body_b = request("start", OFF)
    assert watcher.publish(f"{ROOT_TOPIC}/demo-b/cmd", body_b).value == 0
    assert watcher.publish(f"{ROOT_TOPIC}/demo-a/cmd", request("start", OFF)[1]).value == 0
    attacker.wait_for(f"{ROOT_TOPIC}/demo-a/cmd")
    victim.wait_for(f"{ROOT_TOPIC}/demo-b/cmd", lambda b: b["id"] == rid_b)
    # Through `#` it reads its own host's topics (retained states included), nothing else.
    assert f"{ROOT_TOPIC}/demo-a/cmd" in attacker.topics()
    assert all(t.startswith(f"{ROOT_TOPIC}/demo-a/") for t in attacker.topics()), attacker.topics()
    # The client id is the username: borrowing demo-b's id did not take its session over.
    assert victim.client.is_connected()


def test_gateway_credentials_send_commands_but_never_write_state(agent_a, connect):
    gw = connect("gw1")
    reply_topic = f"{ROOT_TOPIC}/demo-a/reply/gw1"
    gw.subscribe(f"{ROOT_TOPIC}/+/reply/#", f"{ROOT_TOPIC}/+/vm/+/set")
    rid, body = request("suspend", WEB)

    def final() -> Any:
        gw.publish(
            f"{ROOT_TOPIC}/demo-a/cmd", body, response_topic=reply_topic, correlation=rid.encode()
        )
        return gw.wait_for(
            reply_topic, lambda r: r["id"] == rid and r["status"] != "accepted", timeout=1
        )

    # The agent may still be connecting: a request before its SUBSCRIBE is lost, so retry
    # (same id: the agent runs it once).
    reply = wait_until(lambda: _quiet(final), 15, every=0.1)
    assert reply["status"] == "succeeded" and reply["state"] == "paused"
    ha = connect("homeassistant")
    ha.subscribe(f"{ROOT_TOPIC}/demo-a/vm/+/state")
    ha.wait_for(f"{ROOT_TOPIC}/demo-a/vm/{WEB}/state", lambda s: s["state"] == "paused")
    forged = json.dumps({"v": 1, "host": "demo-a", "uuid": WEB, "state": "running"})
    state_topic = f"{ROOT_TOPIC}/demo-a/vm/{WEB}/state"
    assert gw.publish(state_topic, forged, retain=True).value == NOT_AUTHORIZED
    assert gw.publish(f"{ROOT_TOPIC}/demo-a/vm/{WEB}/set", "ON").value == NOT_AUTHORIZED
    assert gw.publish(f"{ROOT_TOPIC}/demo-a/status", "{}").value == NOT_AUTHORIZED
    assert gw.publish(f"{ROOT_TOPIC}/gateway/gw2/status", "{}").value == NOT_AUTHORIZED
    # gw2's replies never reach gw1, though gw1 listens to every reply topic.
    gw2 = connect("gw2")
    rid2, body2 = request("resume", WEB)
    gw2.subscribe(f"{ROOT_TOPIC}/demo-a/reply/gw2")
    gw2.publish(
        f"{ROOT_TOPIC}/demo-a/cmd",
        body2,
        response_topic=f"{ROOT_TOPIC}/demo-a/reply/gw2",
        correlation=rid2.encode(),
    )
    gw2.wait_for(f"{ROOT_TOPIC}/demo-a/reply/gw2", lambda r: r["status"] == "succeeded")
    ha.wait_for(state_topic, lambda s: s["state"] == "running")
    assert {m.topic for m in gw.messages} == {reply_topic}
    assert not [m for m in ha.on(state_topic) if b'"seq"' not in m.payload], "forged state seen"


def _quiet(fn: Any) -> Any:
    try:
        return fn()
    except (AssertionError, TimeoutError):
        return None


def test_real_gateway_over_tls_serves_and_commands(agent_a, tmp_path, prod_broker):
    mark = prod_broker.mark()
    gw = GatewayProc(
        tmp_path,
        prod_broker.url("gw2"),
        gateway_id="gw2",
        KVMSUP_MQTT_CA=str(prod_broker.ca),
    ).start()
    try:

        def ready() -> Any:
            # The previous test's agent left a retained "offline": wait for this one's "online".
            body = gw.get("/vms").json()
            vms = body.get("vms", [])
            return len(vms) == len(DEMO_A) and all(v["host_online"] for v in vms) and body

        body = wait_until(ready, 15)
        assert {v["host"] for v in body["vms"]} == {"demo-a"}
        done = gw.post("/vm/db-01/restart", json={"force": True})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "succeeded"
    finally:
        gw.stop()
    out = gw.service.output()
    assert "Traceback" not in out, out[-4000:]
    assert SECRETS["gw2"] not in out, "the gateway logged its MQTT password"
    assert not prod_broker.denied("gw2", mark), prod_broker.denied("gw2", mark)


def test_home_assistant_set_on_starts_the_vm(agent_a, connect):
    ha = connect("homeassistant")
    state_topic = f"{ROOT_TOPIC}/demo-a/vm/{OFF}/state"
    ha.subscribe(state_topic)
    ha.wait_for(state_topic, lambda s: s["state"] == "stopped")
    since = time.monotonic()

    def started() -> Any:
        ha.publish(f"{ROOT_TOPIC}/demo-a/vm/{OFF}/set", "ON")
        return ha.wait_for(state_topic, lambda s: s["state"] == "running", timeout=1)

    # ON is idempotent: repeat until the agent (maybe still subscribing) acts on one.
    assert wait_until(lambda: _quiet(started), 15, every=0.2)
    assert time.monotonic() - since < 15
    # Home Assistant may write its own discovery tree, never a VM's state.
    assert ha.publish("homeassistant/status", "online").value == 0
    assert ha.publish(state_topic, "{}", retain=True).value == NOT_AUTHORIZED


def test_provision_refuses_unsafe_usernames_and_keeps_passwords(tmp_path):
    for bad in (
        ["--agent", "gateway:x"],
        ["--agent", "demo/a:x"],
        ["--gateway", "gw+:x"],
        ["--homeassistant", "ha#:x"],
        ["--homeassistant", "demo-a:x"],  # a HA user named like a host would get its rules
        ["--agent", "Upper:x"],
        # Its node id would be host demo-a's old-layout node id for one of its VMs.
        ["--agent", f"demo-a_{'0123456789abcdef' * 2}:x"],
        ["--agent", f"x_{'f' * 32}:x"],
    ):
        done = subprocess.run(
            ["bash", str(PROVISION), "--out", str(tmp_path / "bad"), "--agent", "demo-a:x", *bad],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode != 0 and "provision.sh:" in done.stderr, bad
    assert not (tmp_path / "bad" / "passwd").exists()
    out = tmp_path / "ok"
    assert provision(out).returncode == 0
    first = (out / "passwd").read_text()
    acl = (out / "acl").read_text()
    # Again, with one user's secret left out (kept), one user dropped, nothing else changed.
    again = subprocess.run(
        [
            "bash",
            str(PROVISION),
            "--out",
            str(out),
            "--agent",
            "demo-a",
            "--gateway",
            f"gw1:{SECRETS['gw1']}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.returncode == 0, again.stderr
    lines = dict(line.split(":", 1) for line in (out / "passwd").read_text().splitlines())
    assert set(lines) == {"demo-a", "gw1"}
    assert f"demo-a:{lines['demo-a']}" in first.splitlines()
    assert "pattern" not in acl and "user demo-a\n" in acl
    # Discovery: one rule per agent, its own node id; no per-object wildcards any more.
    agent_block = acl.split("user demo-a\n", 1)[1].split("\n\n", 1)[0]
    discovery_rules = [r for r in agent_block.splitlines() if "homeassistant/" in r]
    assert discovery_rules == [
        "topic read homeassistant/status",
        "topic write homeassistant/+/kvmsup_demo-a/+/config",
    ]
    # The migration window re-opens the earlier layout's 12 rules, and says so.
    window = provision(tmp_path / "window", "--legacy-discovery")
    assert window.returncode == 0 and "--legacy-discovery" in window.stderr
    legacy = (tmp_path / "window" / "acl").read_text()
    pairs = {
        f"topic write homeassistant/{spec.component}/+/{spec.object_id}/config"
        for spec in discovery.LEGACY_VM_OBJECTS
    }
    opened = {r for r in legacy.splitlines() if r.endswith("/config") and "kvmsup_" not in r}
    assert len(pairs) == 12 and opened == pairs
    assert (out / "passwd").stat().st_mode & 0o077 == 0


def test_upgrade_window_lets_an_agent_move_its_old_layout_then_closes(
    prod_broker, connect, tmp_path
):
    """broker/README.md's upgrade: provision with --legacy-discovery, restart the agent (it moves
    its VMs' configs off the old layout), provision without it. Live, with the production ACL."""
    secrets = prod_broker.ca.parent

    def reprovision(*extra: str) -> None:
        done = provision(secrets, *extra)
        assert done.returncode == 0, done.stderr
        if os.geteuid() == 0:
            _owned_by_broker_user(secrets)
        mark = prod_broker.mark()
        prod_broker.proc.send_signal(signal.SIGHUP)
        # Mosquitto reloads passwd and acl on its next loop, on its one thread, right after it
        # logs this: a client connecting once it is logged meets the new files.
        wait_until(lambda: "Reloading config" in prod_broker.logged(mark), 20)

    def retained() -> set[str]:
        reader = connect("homeassistant")  # replaces the previous HA session (one per user)
        reader.subscribe("homeassistant/#")

        def topics() -> set[str]:
            return {m.topic for m in list(reader.messages) if m.retain and m.payload}

        wait_until(lambda: new <= topics(), 20)
        # The broker sends a subscription's retained messages in one burst: a short settle
        # for any old-layout one among them (the caller checks that there is none).
        time.sleep(0.5)
        return topics()

    legacy = {t for u in DEMO_A.values() for t in discovery.legacy_config_topics("demo-a", u, HA)}
    new = set(discovery.host_config_topics("demo-a", HA))
    new |= {t for u in DEMO_A.values() for t in discovery.config_topics("demo-a", u, HA)}
    reprovision("--legacy-discovery")
    try:
        old_agent = connect("homeassistant")  # seeds what an earlier agent left retained
        for topic in legacy:
            assert not old_agent.publish(topic, '{"unique_id":"x"}', retain=True).is_failure
        mark = prod_broker.mark()
        svc = agent_service(
            tmp_path,
            "demo-a",
            prod_broker.url("demo-a"),
            demo_node_uri("demo-a"),
            KVMSUP_MQTT_CA=str(prod_broker.ca),
        ).start()
        try:
            wait_until(lambda: "per-host layout (4 VMs moved)" in svc.output(), 60)
        finally:
            svc.stop()
        assert "Traceback" not in svc.output()
        assert not prod_broker.denied("demo-a", mark)
        found = retained()
        assert new <= found and not (legacy & found), sorted(legacy & found)
    finally:
        reprovision()
    # Closed again: demo-a may no longer write a node id that is not its own.
    after = connect("demo-a")
    assert after.publish(sorted(legacy)[0], b"", retain=True).value == NOT_AUTHORIZED


def _tls(broker: ProdBroker, user: str, cls: type[mqtt.Client] = mqtt.Client) -> mqtt.Client:
    c = cls(CallbackAPIVersion.VERSION2, client_id=f"flood-{user}", protocol=mqtt.MQTTv5)
    c.username_pw_set(user, SECRETS[user])
    c.tls_set(ca_certs=str(broker.ca), cert_reqs=ssl.CERT_REQUIRED)
    c.connect("127.0.0.1", broker.port, keepalive=30)
    c.loop_start()
    return c


@pytest.mark.parametrize("big", [False, True], ids=["many", "big"])
def test_prompt_writes_over_tls_never_meet_a_read(prod_broker: ProdBroker, big: bool) -> None:
    """The agent's replies are written by its call workers while paho's network thread reads
    the connection. Over TLS, one OpenSSL connection must never do both at once: the client's
    lock keeps them apart, and this run checks that nothing is lost, cut or reordered through
    the production broker (its ACLs: demo-a reads its `cmd` and answers gw1, which sends)."""
    writer = _tls(prod_broker, "demo-a", PromptClient)
    reader = _tls(prod_broker, "gw1")
    try:
        run_floods(
            writer,  # type: ignore[arg-type]
            reader,
            f"{ROOT_TOPIC}/demo-a/cmd",
            f"{ROOT_TOPIC}/demo-a/reply/gw1",
            rounds=2,
            **(BIG if big else {}),
        )
    finally:
        for c in (writer, reader):
            c.disconnect()
            c.loop_stop()
