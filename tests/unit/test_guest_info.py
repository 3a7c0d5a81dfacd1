"""The inside of a VM (agent/guest/, agent/hypervisor/guestagent.py): libvirt's raw answers into
a bounded `GuestInfo`, and the watcher that reads each running VM off every other path.

Pure: libvirt's domain is a stand-in, the reading pool is the test's own (a reading answers
when the test says so: a guest agent that takes 30 s is a future nobody completes yet), and
time is a number the test moves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import libvirt
import pytest

from agent.errors import DomainNotFound
from agent.guest.reading import NOT_RUNNING, addresses, guest_info
from agent.guest.watcher import GuestWatcher
from agent.hypervisor import GuestReading
from agent.hypervisor.guestagent import read_guest
from shared.guest import MAX_GUEST_ADDRESSES, MAX_GUEST_FILESYSTEMS, GuestInfo
from shared.messages import VmState
from shared.topics import POLICY, Topics

pytestmark = pytest.mark.unit

HOST = "kvm1"
UA = "a0000000-0000-4000-8000-000000000001"
UB = "b0000000-0000-4000-8000-000000000002"

# What libvirt's test driver answers to interfaceAddresses, whatever the source.
TEST_DRIVER_IFACES = {
    "testnet0": {
        "addrs": [{"addr": "192.168.122.3", "prefix": 24, "type": 0}],
        "hwaddr": "aa:bb:cc:dd:ee:ff",
    }
}
# A Debian guest's qemu-guest-agent, as libvirt flattens its answers.
GUEST_INFO: dict[str, Any] = {
    "os.id": "debian",
    "os.name": "Debian GNU/Linux",
    "os.pretty-name": "Debian GNU/Linux 12 (bookworm)",
    "os.version": "12 (bookworm)",
    "os.version-id": "12",
    "os.kernel-release": "6.1.0-27-amd64",
    "os.kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1",
    "os.machine": "x86_64",
    "hostname": "guest1",
    "timezone.name": "UTC",
    "timezone.offset": 0,
    "user.count": 1,
    "user.0.name": "root",
    "fs.count": 2,
    "fs.0.name": "vda1",
    "fs.0.mountpoint": "/",
    "fs.0.fstype": "ext4",
    "fs.0.total-bytes": 10_000_000_000,
    "fs.0.used-bytes": 2_500_000_000,
    "fs.1.name": "vdb",
    "fs.1.mountpoint": "/data",
    "fs.1.fstype": "ext2",
    "fs.1.total-bytes": 4_000_000,
    "fs.1.used-bytes": 1_000_000,
}


def _wire(message: GuestInfo) -> GuestInfo:
    """What a gateway reads: the message through its JSON form and the model's validation."""
    return GuestInfo.model_validate_json(message.model_dump_json())


# -- the contract ---------------------------------------------------------------------------
def test_the_guest_topic_is_retained_and_parsed_as_its_own_kind() -> None:
    topics = Topics()
    topic = topics.vm_guest(HOST, UA)
    assert topic == f"kvmsup/v1/{HOST}/vm/{UA}/guest"
    parsed = topics.parse(topic)
    assert parsed is not None and (parsed.kind, parsed.host, parsed.uuid) == ("vm_guest", HOST, UA)
    assert POLICY["vm_guest"].retain and POLICY["vm_guest"].qos == 1
    assert "kvmsup/v1/+/vm/+/guest" in topics.gateway_subscriptions("gw1")


def test_a_message_past_its_bounds_is_refused_whole() -> None:
    base = {"host": HOST, "uuid": UA, "name": "a", "status": "ok"}
    too_many = [{"interface": "eth0", "family": "ipv4", "address": "192.0.2.1", "prefix": 24}] * (
        MAX_GUEST_ADDRESSES + 1
    )
    for bad in (
        {"addresses": too_many},
        {"filesystems": [{"mountpoint": "/", "used_bytes": -1}]},
        {"filesystems": [{"mountpoint": "/", "total_bytes": 2**64}]},
        {"hostname": "h" * 257},
        {"status": "maybe"},
    ):
        with pytest.raises(ValueError):
            GuestInfo.model_validate({**base, **bad})


# -- reading (pure) -------------------------------------------------------------------------
def test_a_full_answer_becomes_os_hostname_users_and_filesystems() -> None:
    reading = GuestReading(TEST_DRIVER_IFACES, "agent", GUEST_INFO, None)
    msg = _wire(guest_info(HOST, UA, "a", reading))
    assert msg.status == "ok" and msg.reason is None
    assert msg.address_source == "agent"
    assert [(a.interface, a.family, a.address, a.prefix) for a in msg.addresses] == [
        ("testnet0", "ipv4", "192.168.122.3", 24)
    ]
    assert msg.os is not None and msg.os.name == "Debian GNU/Linux" and msg.os.version_id == "12"
    assert msg.os.kernel_release == "6.1.0-27-amd64"
    assert (msg.hostname, msg.timezone, msg.timezone_offset_s, msg.users) == ("guest1", "UTC", 0, 1)
    assert [(f.mountpoint, f.type, f.used_bytes, f.total_bytes) for f in msg.filesystems] == [
        ("/", "ext4", 2_500_000_000, 10_000_000_000),
        ("/data", "ext2", 1_000_000, 4_000_000),
    ]
    assert not msg.truncated


def test_no_guest_agent_is_unavailable_with_the_reason_and_the_host_side_addresses() -> None:
    reading = GuestReading(TEST_DRIVER_IFACES, "lease", None, "QEMU guest agent is not connected")
    msg = _wire(guest_info(HOST, UA, "a", reading))
    assert msg.status == "unavailable"
    assert msg.reason == "QEMU guest agent is not connected"
    assert msg.address_source == "lease" and msg.addresses[0].address == "192.168.122.3"
    assert msg.os is None and msg.hostname is None and msg.filesystems == []


def test_garbage_from_the_guest_is_left_out_and_the_message_stays_valid() -> None:
    interfaces: dict[str, Any] = {
        "lo": {
            "hwaddr": "00:00:00:00:00:00",
            "addrs": [{"addr": "127.0.0.1", "prefix": 8, "type": 0}],
        },
        "eth0": {
            "hwaddr": 7,
            "addrs": [
                {"addr": "not an address", "prefix": 24, "type": 0},
                {"addr": "192.0.2.7", "prefix": 999, "type": 0},
                {"addr": "192.0.2.8", "prefix": 24, "type": "ipv4"},
                {"addr": "fe80::1", "prefix": 64, "type": 1},
                "junk",
                {"addr": "2001:db8::7", "prefix": 64, "type": 1},
            ],
        },
        "x" * 10_000: {"addrs": [{"addr": "192.0.2.9", "prefix": 24, "type": 0}]},
        "eth1": "junk",
    }
    info = {
        "os.name": "N" * 100_000,
        "hostname": ["not", "text"],
        "timezone.offset": 10**12,
        "user.count": -3,
        "fs.count": 3,
        "fs.0.mountpoint": "/",
        "fs.0.used-bytes": 2**70,
        "fs.0.total-bytes": "lots",
        "fs.1.mountpoint": 42,
        "fs.2.mountpoint": "/m" * 5000,
        "fs.2.used-bytes": True,
    }
    msg = _wire(guest_info(HOST, UA, "a", GuestReading(interfaces, "agent", info, None)))
    assert [(a.interface, a.address) for a in msg.addresses] == [
        ("eth0", "2001:db8::7"),
        ("x" * 255 + "…", "192.0.2.9"),
    ]
    assert msg.addresses[0].hwaddr is None
    assert msg.os is not None and msg.os.name is not None and len(msg.os.name) == 256
    assert msg.hostname is None and msg.timezone_offset_s is None and msg.users is None
    assert [f.mountpoint[:2] for f in msg.filesystems] == ["/", "/m"]
    assert msg.filesystems[0].used_bytes is None and msg.filesystems[0].total_bytes is None
    assert len(msg.filesystems[1].mountpoint) == 1024 and msg.filesystems[1].used_bytes is None


def test_a_huge_answer_is_cut_at_the_bounds_and_says_so() -> None:
    interfaces = {
        f"eth{i}": {
            "addrs": [
                {"addr": f"10.{i // 250}.{i % 250}.{j}", "prefix": 24, "type": 0}
                for j in range(1, 5)
            ]
        }
        for i in range(5000)
    }
    info: dict[str, Any] = {"fs.count": 10**9}
    for n in range(MAX_GUEST_FILESYSTEMS + 10):
        info[f"fs.{n}.mountpoint"] = f"/m{n}"
    msg = _wire(guest_info(HOST, UA, "a", GuestReading(interfaces, "agent", info, None)))
    assert len(msg.addresses) == MAX_GUEST_ADDRESSES
    assert len(msg.filesystems) == MAX_GUEST_FILESYSTEMS
    assert msg.truncated
    found, cut = addresses(TEST_DRIVER_IFACES)
    assert len(found) == 1 and not cut


class _Dom:
    """A `virDomain` stand-in: each call answers, or raises a libvirt error with a code."""

    def __init__(self, info: Any, by_source: dict[int, Any]) -> None:
        self._info = info
        self._by_source = by_source
        self.sources: list[int] = []

    def guestInfo(self, _types: int, _flags: int) -> Any:
        return self._info() if callable(self._info) else self._info

    def interfaceAddresses(self, source: int, _flags: int) -> Any:
        self.sources.append(source)
        answer = self._by_source.get(source, {})
        return answer() if callable(answer) else answer


def _error(code: int, message: str = "no") -> Callable[[], Any]:
    def raise_it() -> Any:
        exc = libvirt.libvirtError(message)
        exc.err = (code, 0, message, 0, "", "", "", 0, 0)
        raise exc

    return raise_it


AGENT = libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT
LEASE = libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE
ARP = libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP


def test_addresses_come_from_the_guest_agent_first_then_leases_then_arp() -> None:
    dom = _Dom(GUEST_INFO, {AGENT: TEST_DRIVER_IFACES})
    assert read_guest(dom).address_source == "agent"
    no_agent = _error(libvirt.VIR_ERR_OPERATION_INVALID, "QEMU guest agent is not connected")
    dom = _Dom(no_agent, {AGENT: no_agent, LEASE: {}, ARP: TEST_DRIVER_IFACES})
    reading = read_guest(dom)
    assert (reading.address_source, reading.info) == ("arp", None)
    assert reading.agent_error == "QEMU guest agent is not connected"
    assert dom.sources == [AGENT, LEASE, ARP]


def test_a_guest_agent_that_timed_out_is_not_asked_twice() -> None:
    silent = _error(libvirt.VIR_ERR_AGENT_UNRESPONSIVE, "Guest agent is not responding")
    dom = _Dom(silent, {AGENT: TEST_DRIVER_IFACES, LEASE: TEST_DRIVER_IFACES})
    reading = read_guest(dom)
    assert reading.address_source == "lease" and dom.sources == [LEASE]


def test_a_vanished_domain_is_the_callers_error_not_the_guests() -> None:
    dom = _Dom(_error(libvirt.VIR_ERR_NO_DOMAIN), {})
    with pytest.raises(libvirt.libvirtError):
        read_guest(dom)


# -- the watcher ----------------------------------------------------------------------------
class _Pool:
    """Readings run when the test says so; until then they are in flight."""

    def __init__(self) -> None:
        self.pending: list[tuple[Future[GuestReading], Callable[[], GuestReading]]] = []

    def submit(self, fn: Callable[[], GuestReading]) -> Future[GuestReading]:
        future: Future[GuestReading] = Future()
        self.pending.append((future, fn))
        return future

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        pass

    def answer(self, index: int = 0) -> None:
        future, fn = self.pending.pop(index)
        try:
            future.set_result(fn())
        except Exception as exc:
            future.set_exception(exc)


def _state(uuid: str, state: str = "running", name: str | None = None) -> VmState:
    return VmState(
        host=HOST,
        uuid=uuid,
        name=name or uuid[:1],
        state=state,  # type: ignore[arg-type]
        reason="",
        is_active=state == "running",
        vcpus=1,
        memory_mb=256,
        max_memory_mb=256,
        autostart=False,
        persistent=True,
        seq=1,
    )


class _Rig:
    def __init__(self, states: list[VmState], reading: Callable[[str], GuestReading]) -> None:
        self.now = 0.0
        self.states = states
        self.generation = 1
        self.pool = _Pool()
        self.published: list[tuple[str, GuestInfo | None]] = []
        self.reads: list[str] = []

        def read(uuid: str) -> GuestReading:
            self.reads.append(uuid)
            return reading(uuid)

        self.watcher = GuestWatcher(
            HOST,
            30.0,
            read,
            lambda: self.states,
            lambda uuid, msg: self.published.append((uuid, msg)),
            timeout_s=10.0,
            workers=2,
            generation=lambda: self.generation,
            pool=self.pool,
            clock=lambda: self.now,
        )

    def last(self, uuid: str) -> GuestInfo | None:
        return [m for u, m in self.published if u == uuid][-1]


def _ok(_uuid: str) -> GuestReading:
    return GuestReading(TEST_DRIVER_IFACES, "agent", GUEST_INFO, None)


def test_a_guest_agent_that_answers_after_30s_holds_nothing_but_its_own_vm() -> None:
    rig = _Rig([_state(UA), _state(UB)], _ok)
    rig.watcher.scan()
    assert len(rig.pool.pending) == 2  # both started, neither answered: the scan did not wait
    rig.pool.answer(1)  # B answers at once
    assert rig.last(UB) is not None and rig.last(UB).status == "ok"  # type: ignore[union-attr]
    for second in range(1, 31):  # A's guest agent takes 30 s
        rig.now = float(second)
        rig.watcher.scan()
    a = rig.last(UA)
    assert a is not None and a.status == "unavailable"
    assert a.reason == "the guest did not answer within 10s"
    assert [u for u, _ in rig.published].count(UA) == 1  # said once, not every scan
    assert len(rig.pool.pending) == 2  # one in flight for A still; B read again at 30 s
    assert rig.reads == [UB]  # A's reading never returned, B's second not run yet
    rig.pool.answer(0)  # A's late answer is published then
    a = rig.last(UA)
    assert a is not None and a.status == "ok" and a.hostname == "guest1"


def test_published_on_change_only_and_cleared_with_the_vm() -> None:
    rig = _Rig([_state(UA)], _ok)
    for second in (0, 30, 60):
        rig.now = float(second)
        rig.watcher.scan()
        rig.pool.answer()
    assert rig.reads == [UA, UA, UA]
    assert len(rig.published) == 1
    rig.now = 90.0
    rig.watcher.scan()  # a reading in flight when the VM is undefined
    rig.states = []
    rig.watcher.forget(UA)
    rig.pool.answer()
    assert rig.published[-1] == (UA, None)


def test_a_stopped_vm_is_unavailable_and_read_at_once_when_it_starts() -> None:
    rig = _Rig([_state(UA, "stopped")], _ok)
    rig.watcher.scan()
    assert rig.reads == [] and rig.pool.pending == []
    msg = rig.last(UA)
    assert msg is not None and (msg.status, msg.reason) == ("unavailable", NOT_RUNNING)
    rig.states = [_state(UA)]
    rig.now = 1.0
    rig.watcher.scan()
    rig.pool.answer()
    msg = rig.last(UA)
    assert msg is not None and msg.status == "ok"


def test_a_guest_agent_event_reads_the_vm_before_its_time() -> None:
    rig = _Rig([_state(UA)], _ok)
    rig.watcher.scan()
    rig.pool.answer()
    rig.now = 5.0
    rig.watcher.scan()
    assert rig.reads == [UA]
    rig.watcher.poke(UA)
    rig.watcher.scan()
    assert len(rig.pool.pending) == 1


def test_a_failed_reading_says_why_and_a_reconnect_republishes() -> None:
    def gone(_uuid: str) -> GuestReading:
        raise DomainNotFound("Domain not found")

    rig = _Rig([_state(UA)], gone)
    rig.watcher.scan()
    rig.pool.answer()
    msg = rig.last(UA)
    assert msg is not None and msg.status == "unavailable"
    assert msg.reason == "not read: Domain not found"
    rig.generation = 2
    rig.watcher.scan()
    assert rig.published[-1] == (UA, msg)
    assert json.loads(msg.model_dump_json())["status"] == "unavailable"


def test_no_more_readings_in_flight_than_workers() -> None:
    uuids = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(5)]
    rig = _Rig([_state(u) for u in uuids], _ok)
    rig.watcher.scan()
    assert len(rig.pool.pending) == 2
    rig.pool.answer()
    rig.now = 1.0
    rig.watcher.scan()
    assert len(rig.pool.pending) == 2
    rig.pool.answer()
    rig.pool.answer()
    assert len(set(rig.reads)) == 3


def test_a_renamed_vm_is_republished_under_its_new_name_at_once() -> None:
    rig = _Rig([_state(UA, name="old")], _ok)
    rig.watcher.scan()
    rig.pool.answer()
    rig.states = [_state(UA, name="new")]
    rig.now = 1.0
    rig.watcher.scan()
    msg = rig.last(UA)
    assert msg is not None and msg.name == "new" and msg.hostname == "guest1"
    assert rig.pool.pending == []  # not read again for it


def test_a_stopped_vm_is_said_not_running_once() -> None:
    rig = _Rig([_state(UA, "stopped")], _ok)
    for second in range(5):
        rig.now = float(second)
        rig.watcher.scan()
    assert [u for u, _ in rig.published] == [UA]
