"""Every MQTT payload of SPEC §3, as frozen pydantic v2 models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.bounds import (
    MAX_BATCH_VMS,
    MAX_DEVICES,
    Count,
    Elapsed,
    Ident,
    Interval,
    Label,
    Name,
    Percent,
    Rate,
    Text,
)
from shared.redact import redact_uri
from shared.snapshots import SnapshotCreateParams, SnapshotParams

PROTOCOL_VERSION: Literal[1] = 1

VmStateName = Literal[
    "running", "paused", "stopped", "shutting_down", "crashed", "suspended", "unknown"
]
VM_STATES: tuple[str, ...] = get_args(VmStateName)

# States in which the guest exists in memory (`is_active`).
ACTIVE_STATES = frozenset({"running", "paused", "shutting_down", "suspended"})

LifecycleAction = Literal["start", "shutdown", "destroy", "reboot", "reset", "suspend", "resume"]
# The lifecycle actions (what a plain `set` may name); snapshot actions carry their own params.
ACTIONS: tuple[str, ...] = get_args(LifecycleAction)
SnapshotAction = Literal["snapshot_create", "snapshot_revert", "snapshot_delete"]
SNAPSHOT_ACTIONS: tuple[str, ...] = get_args(SnapshotAction)
Action = Literal[LifecycleAction, SnapshotAction]
ALL_ACTIONS: tuple[str, ...] = get_args(Action)

# The statuses that end a command: the agent's, and the gateway's own guesses about a job.
FinalStatus = Literal["succeeded", "failed", "rejected", "timed_out"]
FINAL_STATUSES: tuple[str, ...] = get_args(FinalStatus)
ReplyStatus = Literal["accepted", FinalStatus]

MemorySource = Literal["guest", "rss", "none"]


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso_z(value: datetime) -> str:
    """ISO 8601 UTC with milliseconds and `Z`: every timestamp on the wire and in the API."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ISO 8601 UTC on the wire ("2026-11-26T17:52:55.123Z"), an aware datetime in Python.
UtcDateTime = Annotated[
    datetime,
    AfterValidator(_as_utc),
    PlainSerializer(iso_z, return_type=str, when_used="json"),
]


def utc_now() -> datetime:
    """The current time, aware and in UTC (the `ts` of every payload)."""
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of every payload: versioned, timestamped, immutable, tolerant of added fields."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Literal[1] = PROTOCOL_VERSION
    ts: UtcDateTime = Field(default_factory=utc_now)


class ErrorInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    code: Label
    message: Text


class Hypervisor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    type: Label
    version: Label


class NodeInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    cpus: Count
    memory_mb: Count
    model: Label


def _public_uri(uri: str | None) -> str | None:
    return redact_uri(uri).public if uri else uri


class HostStatus(Message):
    """Retained `…/<host>/status`; `online:false` with nothing else is the MQTT will."""

    host: Ident
    online: bool
    agent_version: Label | None = None
    libvirt_connected: bool | None = None
    # Never with credentials (SPEC §3), whoever built the status: an older agent's included.
    libvirt_uri: Annotated[Name | None, AfterValidator(_public_uri)] = None
    hypervisor: Hypervisor | None = None
    node: NodeInfo | None = None
    interval_s: Interval | None = None
    started_at: UtcDateTime | None = None


class VmState(Message):
    """Retained `…/vm/<uuid>/state`; `seq` grows per VM, across agent restarts too."""

    host: Ident
    uuid: Ident
    name: Name
    state: VmStateName
    reason: Text
    is_active: bool
    vcpus: Count
    memory_mb: Count
    max_memory_mb: Count
    autostart: bool
    persistent: bool
    seq: Count


class DiskIO(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    device: Label
    read_bytes: Count
    write_bytes: Count
    read_bps: Rate | None = None
    write_bps: Rate | None = None
    read_iops: Rate | None = None
    write_iops: Rate | None = None
    # Cumulative request counts (libvirt's rd.reqs/wr.reqs); None from agents older than them.
    read_reqs: Count | None = None
    write_reqs: Count | None = None


class NetIO(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    interface: Label
    rx_bytes: Count
    tx_bytes: Count
    rx_bps: Rate | None = None
    tx_bps: Rate | None = None
    rx_errors: Count = 0
    tx_errors: Count = 0
    rx_drops: Count = 0
    tx_drops: Count = 0
    # Cumulative packet counts; None from agents older than them.
    rx_packets: Count | None = None
    tx_packets: Count | None = None


class VmMetrics(Message):
    """One VM's metrics: the seed's fields plus identity, rates and provenance."""

    host: Ident
    uuid: Ident
    name: Name
    state: VmStateName
    cpu_percent: Percent | None = None
    vcpus: Count
    memory_percent: Percent | None = None
    # Whole MiB, as the seed sent them (a Dart `as int` must keep working).
    memory_used_mb: Count | None = None
    memory_total_mb: Count | None = None
    memory_source: MemorySource = "none"
    disk_io: list[DiskIO] = Field(default_factory=list, max_length=MAX_DEVICES)
    network_io: list[NetIO] = Field(default_factory=list, max_length=MAX_DEVICES)
    interval_s: Elapsed | None = None
    stale: bool = False
    # Cumulative CPU time of the domain, seconds (libvirt's cpu.time); None when the VM is not
    # running, its stats could not be read, or the agent is older than the field.
    cpu_time_s: Rate | None = None


class HostMetrics(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    cpu_percent: Percent | None = None
    cpus: Count | None = None
    memory_total_mb: Count | None = None
    memory_free_mb: Count | None = None
    vms_total: Count = 0
    vms_running: Count = 0
    vcpus_allocated: Count = 0
    memory_allocated_mb: Count = 0


class MetricsBatch(Message):
    """`…/<host>/metrics`: one per tick, the host's figures and every VM's."""

    host: Ident
    interval_s: Interval
    tick: Count
    host_metrics: HostMetrics
    vms: list[VmMetrics] = Field(max_length=MAX_BATCH_VMS)


class VmEvent(Message):
    """`…/<host>/events`: a lifecycle change or a command outcome (the audit trail)."""

    host: Ident
    kind: Literal["lifecycle", "reboot", "command", "agent"]
    uuid: Ident | None = None
    name: Name | None = None
    event: Label
    detail: Text | None = None
    state: VmStateName | None = None
    # Command outcomes only.
    id: Ident | None = None
    action: Label | None = None
    status: ReplyStatus | None = None
    by: Label | None = None
    error: ErrorInfo | None = None


class CommandParams(BaseModel):
    """A lifecycle action's params."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    force_after: bool = False


ActionParams = CommandParams | SnapshotCreateParams | SnapshotParams
# Which params model each action takes; anything else is refused (`bad_request`).
PARAMS_OF: dict[str, type[BaseModel]] = {
    **dict.fromkeys(ACTIONS, CommandParams),
    "snapshot_create": SnapshotCreateParams,
    "snapshot_revert": SnapshotParams,
    "snapshot_delete": SnapshotParams,
}


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class CommandRequest(Message):
    """`…/<host>/cmd`, sent as an MQTT v5 request (ResponseTopic + CorrelationData = id)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=False)

    id: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_nonblank)]
    action: Action
    vm: Ident
    params: ActionParams = Field(default_factory=CommandParams)
    # The latest moment the agent may begin the command's libvirt action (required, SPEC §3).
    not_after: UtcDateTime
    by: Label = "unknown"

    @field_validator("params", mode="before")
    @classmethod
    def _params_of_action(cls, value: Any, info: ValidationInfo) -> Any:
        """Params are read with the model of the request's action (declared before them)."""
        model = PARAMS_OF.get(info.data.get("action", ""))
        if model is None or isinstance(value, BaseModel):
            return value
        return model.model_validate(value)

    @model_validator(mode="after")
    def _params_fit(self) -> CommandRequest:
        if type(self.params) is not PARAMS_OF[self.action]:
            raise ValueError(f"params do not fit the action {self.action}")
        return self


class CommandReply(Message):
    """`…/<host>/reply/<gateway_id>`: `accepted`, then one final status."""

    id: Ident | None
    host: Ident
    status: ReplyStatus
    action: Label | None = None
    vm: Ident | None = None
    name: Name | None = None
    state: VmStateName | None = None
    changed: bool | None = None
    escalated: bool | None = None
    error: ErrorInfo | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


# Bound of one VM's snapshot list on the wire; KVMSUP_SNAPSHOTS_MAX_PER_VM stays below it.
MAX_SNAPSHOTS = 1024


class SnapshotInfo(BaseModel):
    """One snapshot as libvirt keeps it; `state` is the VM's when it was taken."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: Label
    description: Text = ""
    created: UtcDateTime
    state: VmStateName
    has_memory: bool
    current: bool
    parent: Label | None = None


class VmSnapshots(Message):
    """Retained `…/vm/<uuid>/snapshots`: every snapshot of the VM, oldest first."""

    host: Ident
    uuid: Ident
    name: Name
    snapshots: list[SnapshotInfo] = Field(default_factory=list, max_length=MAX_SNAPSHOTS)


class GatewayStatus(Message):
    """Retained `…/gateway/<gateway_id>/status`, with an MQTT will."""

    gateway: Ident
    online: bool
    version: Label | None = None


def error(code: str, message: str) -> ErrorInfo:
    return ErrorInfo(code=code, message=message)


def dump(model: BaseModel) -> bytes:
    """Wire form of a payload."""
    return model.model_dump_json(exclude_none=False).encode()


def as_dict(model: BaseModel) -> dict[str, Any]:
    """JSON-ready dict of a payload (what REST and Socket.IO send)."""
    return model.model_dump(mode="json")
