"""Which lifecycle actions apply to which VM states, and what each leaves behind (pure)."""

from __future__ import annotations

from shared.messages import VmStateName

# What each action leaves the VM in; a VM already there makes the command a no-op.
TARGET: dict[str, tuple[VmStateName, ...]] = {
    "start": ("running",),
    "shutdown": ("stopped", "crashed"),
    "destroy": ("stopped", "crashed"),
    "suspend": ("paused",),
    "resume": ("running",),
}
# States an action may start from; anything else fails with `invalid_state`.
ALLOWED_FROM: dict[str, tuple[VmStateName, ...]] = {
    "start": ("stopped", "crashed"),
    "shutdown": ("running", "paused", "shutting_down", "suspended"),
    "destroy": ("running", "paused", "shutting_down", "suspended", "unknown"),
    "reboot": ("running",),
    "reset": ("running", "paused", "shutting_down"),  # a forced restart preempts a shutdown
    "suspend": ("running",),
    "resume": ("paused", "suspended"),
}
