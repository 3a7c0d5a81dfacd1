"""libvirt state, reason and event codes in words (pure; the numbers are libvirt's stable ABI)."""

from __future__ import annotations

from shared.messages import VmStateName

# virDomainState
NOSTATE, RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = range(8)

STATE_NAMES: dict[int, VmStateName] = {
    NOSTATE: "unknown",
    RUNNING: "running",
    BLOCKED: "running",
    PAUSED: "paused",
    SHUTDOWN: "shutting_down",
    SHUTOFF: "stopped",
    CRASHED: "crashed",
    PMSUSPENDED: "suspended",
}


_REASONS: dict[int, tuple[str, ...]] = {
    NOSTATE: ("unknown",),
    RUNNING: (
        "unknown",
        "booted",
        "migrated",
        "restored",
        "from snapshot",
        "unpaused",
        "migration canceled",
        "save canceled",
        "wakeup",
        "crashed",
        "post-copy",
        "post-copy failed",
    ),
    BLOCKED: ("unknown",),
    PAUSED: (
        "unknown",
        "user",
        "migration",
        "save",
        "dump",
        "I/O error",
        "watchdog",
        "from snapshot",
        "shutting down",
        "snapshot",
        "crashed",
        "starting up",
        "post-copy",
        "post-copy failed",
        "API error",
    ),
    SHUTDOWN: ("unknown", "user"),
    SHUTOFF: (
        "unknown",
        "shutdown",
        "destroyed",
        "crashed",
        "migrated",
        "saved",
        "failed",
        "from snapshot",
        "daemon",
    ),
    CRASHED: ("unknown", "panicked"),
    PMSUSPENDED: ("unknown",),
}

# virDomainEventType
EVENT_NAMES: tuple[str, ...] = (
    "defined",
    "undefined",
    "started",
    "suspended",
    "resumed",
    "stopped",
    "shutdown",
    "pmsuspended",
    "crashed",
)
EVENT_DEFINED, EVENT_UNDEFINED = 0, 1
# A rename is UNDEFINED(renamed) then DEFINED(renamed) for the same UUID: not a removal.
UNDEFINED_RENAMED = 1


def state_name(state: int) -> VmStateName:
    return STATE_NAMES.get(state, "unknown")


def reason_words(state: int, reason: int) -> str:
    reasons = _REASONS.get(state, ("unknown",))
    return reasons[reason] if 0 <= reason < len(reasons) else "unknown"


def event_name(event: int) -> str:
    return EVENT_NAMES[event] if 0 <= event < len(EVENT_NAMES) else f"event-{event}"
