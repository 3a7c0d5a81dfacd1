"""Which actions apply to which VM states, and what each leaves behind (pure)."""

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
# What libvirt guarantees once the action's call has returned: suspend, resume, create and
# destroy return after the vCPUs stopped, ran, or the process was started or killed, so the
# reply states it without another read (one RPC less per command, and no race with the
# lifecycle event's own re-read). Reboot and reset leave the VM as it was: a paused VM stays
# paused through a reset, and a reboot is only a request to the guest.
AFTER: dict[str, VmStateName] = {
    "start": "running",
    "destroy": "stopped",
    "suspend": "paused",
    "resume": "running",
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
    # A snapshot is taken of a guest that runs, is paused or is off (QEMU cannot save one
    # suspended to RAM, nor one midway through its own shutdown); any state may go back to one,
    # and deleting one only changes the disk images' and libvirt's records.
    "snapshot_create": ("running", "paused", "stopped", "crashed"),
    "snapshot_revert": ("running", "paused", "stopped", "crashed", "suspended", "shutting_down"),
    "snapshot_delete": ("running", "paused", "stopped", "crashed", "suspended", "shutting_down"),
}
