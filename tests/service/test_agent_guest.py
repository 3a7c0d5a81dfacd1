"""The agent publishes what it learns of each VM's inside on `…/vm/<uuid>/guest` (SPEC §3),
against libvirt's test driver: it answers `interfaceAddresses` (a fixed address per NIC) but
not `guestInfo`, so a running VM's message is `unavailable` with libvirt's reason and the
address; a stopped VM's says it is not running; an undefined VM's is cleared."""

from __future__ import annotations

import time

import libvirt
import pytest

from shared.guest import GuestInfo
from shared.topics import Topics
from tests.support.mqtt import Recorder

pytestmark = pytest.mark.service

TOPICS = Topics()
HOST = "guest-host"
RUNNING = "d0000000-0000-4000-8000-0000000000a1"
STOPPED = "d0000000-0000-4000-8000-0000000000a2"
VM_XML = """<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>
<memory unit='MiB'>512</memory><vcpu>1</vcpu><os><type>hvm</type></os>
<devices><interface type='network'><mac address='52:54:00:00:00:{mac}'/>
<source network='default'/></interface></devices></domain>"""


def _guest(recorder: Recorder, uuid: str) -> list[GuestInfo | None]:
    topic = TOPICS.vm_guest(HOST, uuid)
    return [
        GuestInfo.model_validate_json(m.payload) if m.payload else None
        for m in recorder.matching(lambda m: m.topic == topic)
    ]


def test_guest_messages_on_change_retained_and_cleared_with_the_vm(
    broker, recorder, start_agent, testdriver
):
    uri = f"test+unix:///default?socket={testdriver.socket}"
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open(uri)
    try:
        running = conn.defineXML(VM_XML.format(name="guest vm", uuid=RUNNING, mac="a1"))
        running.create()
        conn.defineXML(VM_XML.format(name="off vm", uuid=STOPPED, mac="a2"))
        recorder.subscribe(f"{TOPICS.root}/{HOST}/vm/+/guest")
        start_agent(HOST, uri, KVMSUP_GUEST_INFO_EVERY="0.5", KVMSUP_METRICS_INTERVAL="0.5")

        topic = TOPICS.vm_guest(HOST, RUNNING)
        first = recorder.wait_for(lambda m: m.topic == topic)[0]
        msg = GuestInfo.model_validate_json(first.payload)
        assert (msg.host, msg.uuid, msg.name) == (HOST, RUNNING, "guest vm")
        assert msg.status == "unavailable" and msg.reason and "not supported" in msg.reason
        assert msg.address_source == "agent"
        assert [(a.interface, a.hwaddr, a.family, a.prefix) for a in msg.addresses] == [
            ("testnet0", "52:54:00:00:00:a1", "ipv4", 24)
        ]
        off = recorder.wait_for(lambda m: m.topic == TOPICS.vm_guest(HOST, STOPPED))[0]
        off_msg = GuestInfo.model_validate_json(off.payload)
        assert (off_msg.status, off_msg.reason) == ("unavailable", "the VM is not running")

        # Read every 0.5 s, published on change only: still one message after several reads.
        time.sleep(3)
        assert len(_guest(recorder, RUNNING)) == 1

        # Retained: a client arriving later gets both at once.
        late = Recorder(broker.port)
        try:
            late.subscribe(f"{TOPICS.root}/{HOST}/vm/+/guest")
            retained = late.wait_for(lambda m: m.retain, count=3)
            assert {m.topic for m in retained} >= {topic, TOPICS.vm_guest(HOST, STOPPED)}
        finally:
            late.close()

        # Stopped, then undefined: "not running", then the retained message is cleared.
        running.destroy()
        recorder.wait_for(
            lambda m: m.topic == topic and m.payload != b"" and b"not running" in m.payload
        )
        running.undefine()
        recorder.wait_for(lambda m: m.topic == topic and m.payload == b"")
        time.sleep(1.5)  # nothing for the VM after its clearing
        assert _guest(recorder, RUNNING)[-1] is None
    finally:
        conn.close()
