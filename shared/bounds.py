"""The bounds of every figure and text a payload may carry (SPEC §3), as annotated types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

# Bounds of every figure and text a payload may carry. JSON has no Infinity or NaN, yet a JSON
# parser reads `1e999` as an infinite float, and an integer of hundreds of digits overflows a
# float: one such value from one host would make the gateway write invalid JSON to every
# client (REST, Socket.IO) or fail its Prometheus scrape. A payload outside them is refused
# whole at the gateway's ingest (SPEC §3); the agent never produces one.
U64 = 2**64 - 1  # libvirt's counters and sizes are unsigned 64-bit
Count = Annotated[int, Field(ge=0, le=U64)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
# Per-second rates (bytes, requests) and cumulative CPU seconds: finite, never negative.
Rate = Annotated[float, Field(ge=0, le=1e18, allow_inf_nan=False)]
# A configured tick interval; and the time between two samples of a VM (0 when too close).
Interval = Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)]
Elapsed = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
# Identifiers (host and VM ids, job ids, device and interface names, token names).
Ident = Annotated[str, Field(max_length=128)]
Label = Annotated[str, Field(max_length=256)]
# A VM's name: libvirt sets no limit, this is far above what any tool shows.
Name = Annotated[str, Field(max_length=1024)]
MAX_TEXT = 1024
MAX_DEVICES = 256  # disks or interfaces of one VM
MAX_BATCH_VMS = 100_000  # the per-host limit is the gateway's setting (max_vms_per_host)


def _clip(value: object) -> object:
    """Free text (a libvirt error, a state reason) is cut, not refused: it explains, and the
    message around it is still worth having."""
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[: MAX_TEXT - 1] + "…"
    return value


Text = Annotated[str, BeforeValidator(_clip)]
