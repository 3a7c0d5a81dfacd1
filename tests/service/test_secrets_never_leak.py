"""Secrets never leak (issue 8, SPEC §7): API tokens, MQTT passwords and libvirt credentials
appear in no log and no response.

A real Mosquitto that requires passwords, two agents and a gateway, each holding secrets: the
agents' MQTT passwords carry `/`, `#` and `?` (one URL leaves them unencoded, which must still
work), the libvirt URIs carry `user:password@` and a `?password=`, the gateway has tokens. The test
drives reads, commands and errors (a refused token, a failed action, an agent whose libvirt is
unreachable), then greps every service log, every REST body, every Socket.IO event and every MQTT
payload on the broker for each secret, raw and percent-encoded.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import socketio

from tests.support.agentctl import DEMO_A, AgentClient
from tests.support.broker import mosquitto_binary
from tests.support.gateway import GatewayProc, Tokens, wait_until
from tests.support.mqtt import Recorder
from tests.support.ports import free_port, wait_port
from tests.support.procs import DEMO_DIR, ROOT, agent_service

pytestmark = pytest.mark.service

TAG = uuid.uuid4().hex[:10]
MQTT_USERS = {
    "agent-a": f"a/pw#{TAG}?x",  # sent unencoded in the agent's URL
    "agent-x": f"x/pw#{TAG}?y",  # sent percent-encoded
    "gw": f"g/pw#{TAG}?z",
    "observer": f"obs-{TAG}",
}
LIBVIRT_PASS = f"lv/pw:{TAG}"
LIBVIRT_QUERY_PASS = f"lvq{TAG}"
WRONG_TOKEN = f"o-wrong-{TAG}"


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """Mosquitto with a password file and no anonymous access."""
    port = free_port()
    # Started as root, Mosquitto reads its password file as the `mosquitto` user, which cannot
    # enter pytest's 0700 tmp tree: the file lives in a directory of its own, handed over.
    secrets_dir = Path(tempfile.mkdtemp(prefix="kvmsup-secrets-"))
    passwd = secrets_dir / "passwd"
    passwd.touch()
    passwd.chmod(0o600)
    for user, password in MQTT_USERS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    if os.geteuid() == 0:
        broker_user = pwd.getpwnam("mosquitto")
        for path in (secrets_dir, passwd):
            os.chown(path, broker_user.pw_uid, broker_user.pw_gid)
    conf = tmp_path / "auth-mosquitto.conf"
    conf.write_text(
        "per_listener_settings false\n"
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"password_file {passwd}\n"
        "persistence false\n"
        "log_dest stderr\nlog_type all\n"
    )
    log = tmp_path / "mosquitto.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_port(port)
        yield port, log
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(secrets_dir, ignore_errors=True)


def secrets_of(tokens: Tokens) -> list[str]:
    raw = [*MQTT_USERS.values(), LIBVIRT_PASS, LIBVIRT_QUERY_PASS]
    raw += [tokens.viewer, tokens.operator, WRONG_TOKEN]
    return sorted({*raw, *(quote(s, safe="") for s in raw)})


def test_no_secret_in_any_log_or_response(auth_broker: tuple[int, Path], tmp_path: Path) -> None:
    port, broker_log = auth_broker
    tokens = Tokens()
    a_url = f"mqtt://agent-a:{MQTT_USERS['agent-a']}@127.0.0.1:{port}"  # unencoded on purpose
    x_url = f"mqtt://agent-x:{quote(MQTT_USERS['agent-x'], safe='')}@127.0.0.1:{port}"
    gw_url = f"mqtt://gw:{quote(MQTT_USERS['gw'], safe='')}@127.0.0.1:{port}"
    lv_auth = f"admin:{quote(LIBVIRT_PASS, safe='')}@"
    good_uri = f"test://{lv_auth}{DEMO_DIR}/demo-a.xml?password={LIBVIRT_QUERY_PASS}"
    dead_uri = f"test://{lv_auth}/nonexistent-{TAG}/node.xml?password={LIBVIRT_QUERY_PASS}"

    observer = Recorder(port, credentials=("observer", MQTT_USERS["observer"]))
    observer.subscribe("#")
    agents = [
        agent_service(tmp_path, "demo-a", a_url, good_uri).start(),
        agent_service(tmp_path, "demo-x", x_url, dead_uri).start(),
    ]
    gw = GatewayProc(tmp_path, gw_url, tokens=tokens).start()
    bodies: list[str] = []
    try:
        wait_until(lambda: gw.get("/vms").json().get("count") == len(DEMO_A), 30)
        hosts = wait_until(
            lambda: (
                {h["host"]: h for h in gw.get("/hosts").json()["hosts"]}
                if len(gw.get("/hosts").json()["hosts"]) == 2
                else None
            ),
            30,
        )
        # The status shows the URI without its credentials, and the agent took the MQTT URL
        # whose password holds `/`, `#` and `?` unencoded.
        assert hosts["demo-a"]["libvirt_uri"] == (f"test://{DEMO_DIR}/demo-a.xml?password=***"), (
            hosts["demo-a"]
        )
        assert hosts["demo-x"]["libvirt_connected"] is False
        assert hosts["demo-x"]["libvirt_uri"] == (
            f"test:///nonexistent-{TAG}/node.xml?password=***"
        ), hosts["demo-x"]
        sio = gw.sio()
        by_query = gw.sio(query_token=True)  # the handshake's `?token=` form
        by_query.close()
        for refused_token in (WRONG_TOKEN, tokens.viewer + "x"):
            with pytest.raises(socketio.exceptions.ConnectionError):
                gw.sio(refused_token, query_token=True)

        for path in (
            "/",
            "/health",
            "/stats/summary",
            "/vms",
            "/vm/web-01",
            "/vm/web-01/metrics",
            "/vm/web-01/history",
            "/hosts",
            "/hosts/demo-a",
            "/hosts/demo-x",
            "/hosts/demo-a/vms",
            "/events",
            "/audit",
            "/openapi.json",
            "/metrics",
        ):
            resp = gw.get(path)
            assert resp.status_code == 200, (path, resp.text)
            bodies.append(resp.text)
        # Commands that succeed, fail in libvirt, are refused; tokens that are wrong or too weak.
        for verb, token, body, status in (
            ("suspend", "operator", None, 200),
            ("resume", "operator", None, 200),
            ("reboot", "operator", None, 404),  # no such route
            ("stop", "operator", {"force": True}, 200),
            ("suspend", "operator", None, 200),  # shut off: libvirt refuses, the job fails
            ("start", "operator", None, 200),
            ("start", "viewer", None, 403),
            ("start", WRONG_TOKEN, None, 401),
            ("start", None, None, 401),
        ):
            resp = gw.post(f"/vm/web-01/{verb}?wait=20", token=token, json=body)
            assert resp.status_code == status, (verb, resp.text)
            bodies.append(resp.text)
        resp = gw.get("/vms", token=WRONG_TOKEN)
        assert resp.status_code == 401
        bodies.append(resp.text)
        resp = gw.post("/vm/no-such-vm/start")
        assert resp.status_code == 404
        bodies.append(resp.text)
        bodies.append(gw.get("/jobs").text)

        # A command to the agent whose libvirt is down is refused (the reply is grepped too).
        dead = AgentClient(observer, "demo-x")
        reply = dead.call("start", DEMO_A["web-01"], timeout=20)
        assert reply["status"] == "rejected", reply

        # A URL it cannot parse (the password's `:` and `@` make the port text) is refused
        # without quoting it.
        bad = subprocess.run(
            [sys.executable, "-m", "agent"],
            env={"KVMSUP_MQTT_URL": f"mqtt://u:{MQTT_USERS['agent-a']}@h:{LIBVIRT_QUERY_PASS}"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2, bad.stderr
        assert "port" in bad.stderr, bad.stderr
        bodies.append(bad.stdout + bad.stderr)
        time.sleep(1.0)  # a last tick of events and metrics for the collectors
        bodies += [repr(event) for event in sio.events]
        assert any(e == "vm_state" for e, _ in sio.events), sio.events[:5]
        sio.close()
    finally:
        gw.stop()
        for agent in agents:
            agent.stop()
        observer.close()

    logs: dict[str, str] = {svc.name: svc.output() for svc in (*agents, gw.service)}
    logs["mosquitto"] = broker_log.read_text(errors="replace")
    assert "not reachable" in logs["agent-demo-x"], logs["agent-demo-x"][-2000:]
    payloads = [m.payload.decode(errors="replace") for m in observer.messages]
    assert len(payloads) > 20 and len(bodies) > 25
    for secret in secrets_of(tokens):
        for name, text in logs.items():
            assert secret not in text, f"{secret!r} in the {name} log"
        for text in bodies:
            assert secret not in text, f"{secret!r} in a response: {text[:500]}"
        for text in payloads:
            assert secret not in text, f"{secret!r} published on MQTT: {text[:500]}"
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name}:\n{text[-3000:]}"


def test_a_libvirt_error_quoting_the_uri_reaches_callers_without_its_secrets() -> None:
    """libvirt's messages may quote the URI (an unknown driver, a failed remote connect); the
    agent's error, which becomes a command reply, shows it redacted."""
    import queue

    import libvirt

    from agent.errors import AgentError
    from agent.hypervisor import Connection
    from agent.hypervisor.loop import start_event_loop

    uri = f"test://admin:{quote(LIBVIRT_PASS, safe='')}@/default?password={LIBVIRT_QUERY_PASS}"
    conn = Connection(uri, queue.Queue())
    start_event_loop()  # what Connection.start does first: callbacks need libvirt's loop
    conn._open()
    try:

        def fails(_c: object) -> None:
            raise libvirt.libvirtError(f"operation failed: cannot talk to {uri} as {LIBVIRT_PASS}")

        with pytest.raises(AgentError) as failed:
            conn.call(fails)
        message = str(failed.value)
        assert "test:///default?password=***" in message, message
        for secret in (LIBVIRT_PASS, quote(LIBVIRT_PASS, safe=""), LIBVIRT_QUERY_PASS):
            assert secret not in message, message
    finally:
        conn.stop()
