"""libvirt state, reason and event codes in words (SPEC §3 state mapping)."""

from __future__ import annotations

import libvirt
import pytest

from agent import domstate
from agent.hypervisor import HypervisorEvent
from shared.messages import ACTIVE_STATES, VM_STATES

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (libvirt.VIR_DOMAIN_RUNNING, "running"),
        (libvirt.VIR_DOMAIN_BLOCKED, "running"),
        (libvirt.VIR_DOMAIN_PAUSED, "paused"),
        (libvirt.VIR_DOMAIN_SHUTDOWN, "shutting_down"),
        (libvirt.VIR_DOMAIN_SHUTOFF, "stopped"),
        (libvirt.VIR_DOMAIN_CRASHED, "crashed"),
        (libvirt.VIR_DOMAIN_PMSUSPENDED, "suspended"),
        (libvirt.VIR_DOMAIN_NOSTATE, "unknown"),
        (8, "unknown"),
        (99, "unknown"),
        (-1, "unknown"),
    ],
)
def test_state_mapping(code: int, name: str) -> None:
    assert domstate.state_name(code) == name


def test_every_mapped_state_is_a_protocol_state() -> None:
    assert set(domstate.STATE_NAMES.values()) <= set(VM_STATES)
    assert set(VM_STATES) >= ACTIVE_STATES
    assert "stopped" not in ACTIVE_STATES
    assert "crashed" not in ACTIVE_STATES
    assert "running" in ACTIVE_STATES


def test_constants_are_libvirts() -> None:
    assert domstate.RUNNING == libvirt.VIR_DOMAIN_RUNNING
    assert domstate.SHUTOFF == libvirt.VIR_DOMAIN_SHUTOFF
    assert domstate.PMSUSPENDED == libvirt.VIR_DOMAIN_PMSUSPENDED
    assert domstate.EVENT_DEFINED == libvirt.VIR_DOMAIN_EVENT_DEFINED
    assert domstate.EVENT_UNDEFINED == libvirt.VIR_DOMAIN_EVENT_UNDEFINED


@pytest.mark.parametrize(
    ("state", "reason", "words"),
    [
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, "booted"),
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_UNPAUSED, "unpaused"),
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATED, "migrated"),
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_WAKEUP, "wakeup"),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER, "user"),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR, "I/O error"),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP, "starting up"),
        (libvirt.VIR_DOMAIN_SHUTDOWN, libvirt.VIR_DOMAIN_SHUTDOWN_USER, "user"),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, "shutdown"),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED, "destroyed"),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, "crashed"),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED, "failed"),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DAEMON, "daemon"),
        (libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED, "panicked"),
        (libvirt.VIR_DOMAIN_SHUTOFF, 0, "unknown"),
        (libvirt.VIR_DOMAIN_SHUTOFF, 99, "unknown"),
        (libvirt.VIR_DOMAIN_SHUTOFF, -1, "unknown"),
        (libvirt.VIR_DOMAIN_BLOCKED, 3, "unknown"),
        (42, 1, "unknown"),
    ],
)
def test_reason_words(state: int, reason: int, words: str) -> None:
    assert domstate.reason_words(state, reason) == words


@pytest.mark.parametrize(
    ("prefix", "state"),
    [
        ("VIR_DOMAIN_RUNNING_", libvirt.VIR_DOMAIN_RUNNING),
        ("VIR_DOMAIN_PAUSED_", libvirt.VIR_DOMAIN_PAUSED),
        ("VIR_DOMAIN_SHUTOFF_", libvirt.VIR_DOMAIN_SHUTOFF),
        ("VIR_DOMAIN_CRASHED_", libvirt.VIR_DOMAIN_CRASHED),
    ],
)
def test_every_reason_libvirt_knows_has_words(prefix: str, state: int) -> None:
    codes = {
        v
        for k, v in vars(libvirt).items()
        if k.startswith(prefix) and not k.endswith("_LAST") and isinstance(v, int)
    }
    for code in codes:
        words = domstate.reason_words(state, code)
        expected_unknown = code == 0
        assert (words == "unknown") is expected_unknown, (prefix, code, words)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (libvirt.VIR_DOMAIN_EVENT_DEFINED, "defined"),
        (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, "undefined"),
        (libvirt.VIR_DOMAIN_EVENT_STARTED, "started"),
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, "suspended"),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, "resumed"),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, "stopped"),
        (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, "shutdown"),
        (libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED, "pmsuspended"),
        (libvirt.VIR_DOMAIN_EVENT_CRASHED, "crashed"),
        (9, "event-9"),
    ],
)
def test_event_names(code: int, name: str) -> None:
    assert domstate.event_name(code) == name


def test_a_lifecycle_event_says_when_it_is_a_start() -> None:
    code = libvirt.VIR_DOMAIN_EVENT_STARTED
    assert domstate.event_name(code) == "started"
    assert HypervisorEvent("lifecycle", "u", "vm", code, 0).started
    assert not HypervisorEvent("lifecycle", "u", "vm", libvirt.VIR_DOMAIN_EVENT_STOPPED, 0).started
    assert not HypervisorEvent("lifecycle", "u", "vm").started  # a re-read, no libvirt event
