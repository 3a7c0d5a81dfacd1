"""Junk and forgeries on every topic the gateway reads, published as an MQTT client would, to a
real Mosquitto, against the gateway as a real process: each is dropped, counted in /health and
/metrics, logged without a flood, and the next good message is handled."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import socketio

from shared.messages import (
    HostMetrics,
    HostStatus,
    MetricsBatch,
    VmEvent,
    VmMetrics,
    VmState,
    dump,
)
from shared.topics import Topics
from tests.support.broker import Broker
from tests.support.gateway import GatewayProc, wait_until
from tests.support.mqtt import Recorder
from tests.support.vm_states import vm_state

pytestmark = pytest.mark.service

T = Topics("kvmsup")
UA = "a0000000-0000-4000-8000-00000000000a"
UB = "b0000000-0000-4000-8000-00000000000b"
STRANGER = "c0000000-0000-4000-8000-00000000000c"


def state(host: str, uuid: str, name: str, seq: int, st: str = "running") -> VmState:
    return vm_state(
        host,
        uuid,
        name,
        state=st,
        is_active=st == "running",
        vcpus=1,
        memory_mb=256,
        max_memory_mb=256,
        seq=seq,
    )


def vm_metrics(host: str, uuid: str, name: str, cpu: float) -> VmMetrics:
    return VmMetrics(host=host, uuid=uuid, name=name, state="running", cpu_percent=cpu, vcpus=1)


def batch(host: str, *vms: VmMetrics) -> MetricsBatch:
    return MetricsBatch(
        host=host, interval_s=1, tick=1, host_metrics=HostMetrics(cpu_percent=1.0), vms=list(vms)
    )


class Agents:
    """Plays the agents of host-a (VM `web`) and host-b (VM `db`) on the test's broker."""

    def __init__(self, broker: Broker) -> None:
        self.client = Recorder(broker.port)
        self.seq = 1

    def publish(self, topic: str, payload: bytes | str, **kw: Any) -> None:
        self.client.publish(topic, payload, **kw)

    def boot(self) -> None:
        for host, uuid, name in (("host-a", UA, "web"), ("host-b", UB, "db")):
            status = HostStatus(host=host, online=True, libvirt_connected=True)
            self.publish(T.host_status(host), dump(status), retain=True)
            self.publish(T.vm_state(host, uuid), dump(state(host, uuid, name, 1)), retain=True)

    def good_state(self, st: str) -> None:
        """A genuine change of `web`: what must get through after every attack."""
        self.seq += 1
        self.publish(T.vm_state("host-a", UA), dump(state("host-a", UA, "web", self.seq, st)))


@pytest.fixture
def agents(broker: Broker) -> Iterator[Agents]:
    forger = Agents(broker)
    forger.boot()
    yield forger
    forger.client.close()


@pytest.fixture
def gw(agents: Agents, start_gateway: Callable[..., GatewayProc]) -> GatewayProc:
    gateway = start_gateway()
    wait_until(lambda: gateway.get("/vms").json()["count"] == 2, timeout=15)
    return gateway


def dropped(gw: GatewayProc, reason: str) -> int:
    count: int = gw.get("/health").json()["messages_dropped"][reason]
    return count


def web(gw: GatewayProc) -> dict[str, Any]:
    body: dict[str, Any] = gw.get("/vm/web").json()
    return body


def then_good_is_handled(gw: GatewayProc, agents: Agents) -> None:
    wanted = "paused" if web(gw)["state"] != "paused" else "running"
    agents.good_state(wanted)
    wait_until(lambda: web(gw)["state"] == wanted, timeout=10)


def metric_line(gw: GatewayProc, reason: str) -> str:
    return f'kvmsup_gateway_messages_dropped_total{{gateway="gw-test",reason="{reason}"}}'


# -- junk on each topic ------------------------------------------------------------------------

JUNK: list[tuple[str, str, bytes, str]] = [
    ("not JSON on a status", T.host_status("host-a"), b"{not json", "not_json"),
    (
        "invalid UTF-8 in a state",
        T.vm_state("host-a", UA),
        b'{"v":1,"name":"\xff\xfe"}',
        "not_json",
    ),
    (
        "deep nesting in events",
        T.host_events("host-a"),
        b"[" * 100_000 + b"]" * 100_000,
        "not_json",
    ),
    (
        "NaN in metrics",
        T.host_metrics("host-a"),
        dump(batch("host-a", vm_metrics("host-a", UA, "web", 1.0))).replace(
            b'"cpu_percent":1.0', b'"cpu_percent":NaN'
        ),
        "not_json",
    ),
    ("wrong schema on a state", T.vm_state("host-a", UA), b'{"v":1,"host":"host-a"}', "bad_schema"),
    ("a JSON string as a reply", T.reply("host-a", "gw-test"), b'"hello"', "bad_schema"),
    ("1 MiB on metrics", T.host_metrics("host-a"), b"[" + b" " * (1024 * 1024) + b"]", "too_large"),
    # JSON allows 1e999, which every parser reads as infinity; JSON has no infinity to write.
    (
        "1e999 as a status's interval",
        T.host_status("host-a"),
        dump(HostStatus(host="host-a", online=True, libvirt_connected=True, interval_s=2)).replace(
            b'"interval_s":2.0', b'"interval_s":1e999'
        ),
        "out_of_range",
    ),
    (
        "1e999 as a VM's CPU",
        T.host_metrics("host-a"),
        dump(batch("host-a", vm_metrics("host-a", UA, "web", 1.0))).replace(
            b'"cpu_percent":1.0', b'"cpu_percent":1e999'
        ),
        "out_of_range",
    ),
    (
        "a count of 400 digits",
        T.host_metrics("host-a"),
        dump(batch("host-a", vm_metrics("host-a", UA, "web", 1.0))).replace(
            b'"disk_io":[]',
            b'"disk_io":[{"device":"vda","read_bytes":' + b"9" * 400 + b',"write_bytes":0}]',
        ),
        "out_of_range",
    ),
    (
        "a VM name of 100 kB",
        T.vm_state("host-a", UA),
        dump(state("host-a", UA, "web", 10**9)).replace(
            b'"name":"web"', b'"name":"' + b"w" * 100_000 + b'"'
        ),
        "out_of_range",
    ),
]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"), [j[1:] for j in JUNK], ids=[j[0] for j in JUNK]
)
def test_junk_is_dropped_counted_and_the_next_message_handled(
    gw: GatewayProc, agents: Agents, topic: str, payload: bytes, reason: str
) -> None:
    before = web(gw)
    agents.publish(topic, payload)
    wait_until(lambda: dropped(gw, reason) >= 1, timeout=10)
    assert web(gw) == before  # nothing the junk said was taken
    assert f"{metric_line(gw, reason)} 1" in gw.get("/metrics").text
    assert json.loads(gw.get("/vm/web/metrics").text)  # strict JSON: no NaN made it in
    then_good_is_handled(gw, agents)


def test_a_flood_of_junk_is_counted_in_full_and_logged_a_few_times(
    gw: GatewayProc, agents: Agents
) -> None:
    for i in range(2000):
        agents.client.client.publish(T.host_status("host-a"), f"junk {i}".encode(), qos=0)
    agents.publish(T.host_status("host-a"), b"last junk")  # QoS 1: after the rest
    wait_until(lambda: dropped(gw, "not_json") >= 1000, timeout=20)
    then_good_is_handled(gw, agents)
    lines = [ln for ln in gw.service.output().splitlines() if "(not_json)" in ln]
    assert 1 <= len(lines) <= 3, lines[:5]


def test_retained_junk_is_dropped_at_every_start(
    broker: Broker, agents: Agents, start_gateway: Callable[..., GatewayProc]
) -> None:
    agents.publish(T.vm_state("host-a", STRANGER), b"\x00retained junk", retain=True)
    event = VmEvent(host="host-a", kind="lifecycle", event="started", uuid=UA, name="web")
    agents.publish(T.host_events("host-a"), dump(event), retain=True)
    gw = start_gateway()
    wait_until(lambda: gw.get("/vms").json()["count"] == 2, timeout=15)
    wait_until(lambda: dropped(gw, "not_json") == 1 and dropped(gw, "retained") == 1)
    assert gw.get("/events").json()["count"] == 0  # a retained event is not news
    then_good_is_handled(gw, agents)


def test_a_topic_that_is_not_utf8_never_reaches_the_gateway(
    gw: GatewayProc, agents: Agents, broker: Broker
) -> None:
    """A raw MQTT 5 client: paho refuses to build such a PUBLISH. Mosquitto must drop the
    connection (MQTT 5 §1.5.4); the gateway goes on as before."""
    topic = b"kvmsup/v1/host-a/\xff\xfe/status"
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        client_id = b"raw-utf8"
        var = b"\x00\x04MQTT\x05\x02\x00\x1e\x00"  # v5, clean start, keepalive 30, no props
        payload = struct.pack("!H", len(client_id)) + client_id
        body = var + payload
        sock.sendall(bytes([0x10, len(body)]) + body)
        assert sock.recv(64)[0] == 0x20  # CONNACK
        publish = struct.pack("!H", len(topic)) + topic + b"\x00" + b'{"v":1}'
        sock.sendall(bytes([0x30, len(publish)]) + publish)
        sock.settimeout(5)
        try:
            rest = sock.recv(64)
        except ConnectionResetError:
            rest = b""
        assert rest == b"" or rest[0] == 0xE0  # closed, or a DISCONNECT first
    then_good_is_handled(gw, agents)
    assert gw.get("/health").json()["broker_connected"] is True


# -- identity: the topic is the authority ------------------------------------------------------


def test_a_state_whose_uuid_or_host_differ_from_its_topic_is_dropped(
    gw: GatewayProc, agents: Agents
) -> None:
    agents.publish(T.vm_state("host-a", UA), dump(state("host-a", UB, "web", 50, "stopped")))
    agents.publish(T.vm_state("host-a", UA), dump(state("host-b", UA, "web", 51, "stopped")))
    wait_until(lambda: dropped(gw, "identity") == 2)
    assert web(gw)["state"] == "running"
    assert gw.get("/vms").json()["count"] == 2
    then_good_is_handled(gw, agents)


def test_a_status_for_host_b_on_host_a_topic_is_dropped(gw: GatewayProc, agents: Agents) -> None:
    lie = HostStatus(host="host-b", online=False)
    agents.publish(T.host_status("host-a"), dump(lie))
    wait_until(lambda: dropped(gw, "identity") == 1)
    hosts = {h["host"]: h["online"] for h in gw.get("/hosts").json()["hosts"]}
    assert hosts == {"host-a": True, "host-b": True}
    then_good_is_handled(gw, agents)


def test_metrics_on_host_a_cannot_speak_for_host_b_nor_invent_vms(
    gw: GatewayProc, agents: Agents
) -> None:
    agents.publish(
        T.host_metrics("host-b"), dump(batch("host-b", vm_metrics("host-b", UB, "db", 5)))
    )
    wait_until(lambda: gw.get("/vm/db/metrics").json().get("cpu_percent") == 5.0)
    forged = batch(
        "host-a",
        vm_metrics("host-a", UA, "web", 10.0),
        vm_metrics("host-b", UB, "db", 99.0),
        *(vm_metrics("host-a", f"c0000000-0000-4000-8000-{i:012d}", "x", 1) for i in range(50)),
    )
    agents.publish(T.host_metrics("host-a"), dump(forged))
    wait_until(lambda: gw.get("/vm/web/metrics").json().get("cpu_percent") == 10.0)
    wait_until(lambda: dropped(gw, "identity") == 1 and dropped(gw, "unknown_vm") == 50)
    assert gw.get("/vm/db/metrics").json()["cpu_percent"] == 5.0

    def db_history() -> list[float]:  # the history is written a few ms after the cache
        points = gw.get("/vm/db/history?minutes=5").json()["points"]
        return [p["cpu_percent"] for p in points]

    wait_until(lambda: db_history() == [5.0])
    wait_until(lambda: len(gw.get("/vm/web/history?minutes=5").json()["points"]) == 1)
    assert db_history() == [5.0]  # host-a's batch wrote nothing for host-b's VM
    assert "c0000000-0000-4000-8000" not in gw.get("/metrics").text  # no entry was made


def test_an_empty_retained_state_for_an_unknown_vm_changes_nothing(
    gw: GatewayProc, agents: Agents
) -> None:
    agents.publish(T.vm_state("host-a", STRANGER), b"", retain=True)
    wait_until(lambda: dropped(gw, "unknown_vm") == 1)
    assert gw.get("/vms").json()["count"] == 2
    then_good_is_handled(gw, agents)


def test_forged_replies_cannot_finish_a_job(gw: GatewayProc, agents: Agents) -> None:
    """While a stop of `web` (host-a) waits: a reply with another job's correlation data, and
    a reply from host-b naming the job, are dropped; host-a's real reply ends it."""
    agents.client.subscribe(T.cmd("host-a"))
    result: dict[str, Any] = {}
    caller = threading.Thread(
        target=lambda: result.update(resp=gw.post("/vm/web/stop?wait=20")), daemon=True
    )
    caller.start()
    request = agents.client.wait_for(lambda m: m.topic == T.cmd("host-a"))[0]
    job_id = request.json()["id"]
    assert request.correlation == job_id.encode()

    def reply(host: str, status: str, **kw: Any) -> bytes:
        body = {"v": 1, "id": job_id, "host": host, "status": status, "action": "shutdown"}
        body.update({"vm": UA, "state": "stopped" if status == "succeeded" else None, **kw})
        return json.dumps(body).encode()

    mine = T.reply("host-a", "gw-test")
    agents.publish(mine, reply("host-a", "succeeded"), correlation=b"another-job")
    agents.publish(
        T.reply("host-b", "gw-test"), reply("host-b", "succeeded"), correlation=job_id.encode()
    )
    agents.publish(mine, reply("host-a", "failed", vm=UB), correlation=job_id.encode())
    wait_until(lambda: dropped(gw, "identity") == 3)
    assert gw.get(f"/jobs/{job_id}").json()["status"] == "pending"

    agents.publish(mine, reply("host-a", "accepted"), correlation=job_id.encode())
    agents.publish(mine, reply("host-a", "succeeded"), correlation=job_id.encode())
    caller.join(30)
    resp = result["resp"]
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text

    def audited() -> bool:  # the final audit row is committed by the store's writer thread
        audit = gw.get(f"/audit?vm={UA}").json()["audit"]
        return bool(audit) and audit[0]["id"] == job_id and audit[0]["result"] == "succeeded"

    wait_until(audited, timeout=20)


def test_a_reply_flood_for_unknown_jobs_is_counted(gw: GatewayProc, agents: Agents) -> None:
    mine = T.reply("host-a", "gw-test")
    for i in range(200):
        body = {"v": 1, "id": f"x{i}", "host": "host-a", "status": "succeeded"}
        agents.publish(mine, json.dumps(body), correlation=f"x{i}".encode())
    wait_until(lambda: dropped(gw, "unknown_job") == 200, timeout=20)
    then_good_is_handled(gw, agents)


def test_metrics_of_a_host_without_status_make_no_entry(gw: GatewayProc, agents: Agents) -> None:
    ghost = batch("host-c", vm_metrics("host-c", STRANGER, "ghost", 1.0))
    agents.publish(T.host_metrics("host-c"), dump(ghost))
    wait_until(lambda: dropped(gw, "unknown_host") == 1)
    assert [h["host"] for h in gw.get("/hosts").json()["hosts"]] == ["host-a", "host-b"]
    assert 'host="host-c"' not in gw.get("/metrics").text
    then_good_is_handled(gw, agents)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class StrictJSON:
    """What a browser's or a phone's JSON parser accepts: no NaN, no Infinity (python's own
    `json` takes both, so python-socketio would hide the fault a JavaScript client dies of)."""

    dumps = staticmethod(json.dumps)

    @staticmethod
    def loads(s: str | bytes, **kw: Any) -> Any:
        return json.loads(s, parse_constant=_refuse_constant, **kw)


def test_the_fleets_clients_keep_working_while_one_host_sends_out_of_range_figures(
    gw: GatewayProc, agents: Agents
) -> None:
    """An agent's `1e999` or 400-digit count reaches no client: REST stays strict JSON, a
    streaming Socket.IO client stays connected and sees the next good figure, the Prometheus
    scrape answers."""
    sio = socketio.Client(reconnection=False, json=StrictJSON)
    got: list[dict[str, Any]] = []
    sio.on("vm_metrics", got.append)
    try:
        sio.connect(gw.url, transports=["websocket"], auth={"token": gw.tokens.viewer})
        sio.call("subscribe_metrics", {"name": "*"}, timeout=10)
        status = dump(HostStatus(host="host-a", online=True, libvirt_connected=True, interval_s=2))
        good = dump(batch("host-a", vm_metrics("host-a", UA, "web", 1.0)))
        bad = [
            (T.host_status("host-a"), status.replace(b'"interval_s":2.0', b'"interval_s":1e999')),
            (T.host_metrics("host-a"), good.replace(b'"cpu_percent":1.0', b'"cpu_percent":1e999')),
            (
                T.host_metrics("host-a"),
                good.replace(
                    b'"disk_io":[]',
                    b'"disk_io":[{"device":"vda","read_bytes":1'
                    + b"0" * 400
                    + b',"write_bytes":0}]',
                ),
            ),
        ]
        for n, (topic, payload) in enumerate(bad, 1):
            # One at a time: a newer batch of a host would shed an older one still queued.
            agents.publish(topic, payload, retain=topic.endswith("/status"))
            wait_until(lambda n=n: dropped(gw, "out_of_range") >= n, timeout=10)
        agents.publish(
            T.host_metrics("host-a"), good.replace(b'"cpu_percent":1.0', b'"cpu_percent":42.0')
        )
        wait_until(lambda: any(m["cpu_percent"] == 42.0 for m in got), timeout=10)
        assert sio.connected
        for path in ("/hosts", "/vms", "/vm/web", "/vm/web/metrics", "/stats/summary"):
            StrictJSON.loads(gw.get(path).text)
        scrape = gw.get("/metrics")
        assert scrape.status_code == 200 and 'reason="out_of_range"} 3' in scrape.text
    finally:
        sio.disconnect()


def test_one_hosts_credentials_cannot_make_the_gateway_work_without_end(
    agents: Agents, start_gateway: Callable[..., GatewayProc]
) -> None:
    """As host-a's agent could: more VMs than the gateway keeps for a host, a batch that
    lists one VM a hundred times, batches faster than the stated interval, an event dated a
    year ahead (events are pruned by their time)."""
    gw = start_gateway(KVMSUP_MAX_VMS_PER_HOST="3")
    wait_until(lambda: gw.get("/vms").json()["count"] == 2, timeout=15)
    extra = [f"d{i:07d}-0000-4000-8000-00000000000d" for i in range(4)]
    for i, uuid in enumerate(extra):
        agents.publish(T.vm_state("host-a", uuid), dump(state("host-a", uuid, f"x{i}", 1)))
    wait_until(lambda: dropped(gw, "too_many_vms") == 2, timeout=10)
    assert gw.get("/hosts/host-a/vms").json()["count"] == 3
    agents.publish(T.vm_state("host-a", extra[0]), b"", retain=True)  # undefined: room again
    agents.publish(T.vm_state("host-a", extra[3]), dump(state("host-a", extra[3], "x3", 1)))
    wait_until(lambda: gw.get("/vm/x3").status_code == 200, timeout=10)

    history = lambda: gw.get("/vm/web/history", params={"minutes": 5}).json()["count"]  # noqa: E731
    before = history()
    one = vm_metrics("host-a", UA, "web", 5.0)
    agents.publish(T.host_metrics("host-a"), dump(batch("host-a", *[one] * 100)))
    for _ in range(5):  # the batch's interval is 1 s: these come within one half of it
        agents.publish(T.host_metrics("host-a"), dump(batch("host-a", one)))
    agents.publish(
        T.host_metrics("host-a"),
        dump(batch("host-a", one)).replace(b'"cpu_percent":5.0', b'"cpu_percent":6.0'),
    )
    # Every batch handled (applied, or shed for a newer one of the host) before counting.
    wait_until(
        lambda: (
            gw.get("/health").json()["metrics_applied"]["batches"] + dropped(gw, "ingest_behind")
            >= 7
        ),
        timeout=10,
    )
    assert history() == before + 1, "one tick for the VM, whatever the batches said"

    ahead = VmEvent(host="host-a", kind="agent", event="hello", ts="2027-12-07T00:00:00Z")
    agents.publish(T.host_events("host-a"), dump(ahead))
    event = wait_until(
        lambda: next((e for e in gw.get("/events").json()["events"] if e["event"] == "hello"), None)
    )
    assert event["ts"] < "2027", event
