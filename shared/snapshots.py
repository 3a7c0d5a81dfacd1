"""The params of the snapshot commands (SPEC §3), as frozen pydantic v2 models."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_DESCRIPTION = 1024

# A snapshot's name as a command may give it: it becomes a URL path segment at the gateway and
# a file name under libvirt's snapshot directory, so a plain word, never a path.
SNAPSHOT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SnapshotName = Annotated[str, Field(min_length=1, max_length=64, pattern=SNAPSHOT_NAME_PATTERN)]
# How long a snapshot's libvirt call may take once begun (a guest's memory is written out)
# before the command is answered `outcome_unknown`.
SNAPSHOT_TIMEOUT_S = 300.0


class SnapshotParams(BaseModel):
    """`snapshot_revert` and `snapshot_delete`: which snapshot."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: SnapshotName
    timeout_s: float = Field(default=SNAPSHOT_TIMEOUT_S, gt=0, le=3600)


class SnapshotCreateParams(SnapshotParams):
    """`snapshot_create`: its name, a description, and whether a running guest's memory is
    saved with its disks (a stopped VM's snapshot never has memory)."""

    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)] = ""
    memory: bool = True
