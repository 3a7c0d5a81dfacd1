"""Every MQTT payload of SPEC §3, as frozen pydantic v2 models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from shared.redact import redact_uri

PROTOCOL_VERSION: Literal[1] = 1

VmStateName = Literal[
    "running", "paused", "stopped", "shutting_down", "crashed", "suspended", "unknown"
]
VM_STATES: tuple[str, ...] = get_args(VmStateName)

# States in which the guest exists in memory (`is_active`).
ACTIVE_STATES = frozenset({"running", "paused", "shutting_down", "suspended"})

Action = Literal["start", "shutdown", "destroy", "reboot", "reset", "suspend", "resume"]
ACTIONS: tuple[str, ...] = get_args(Action)

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

    code: str
    message: str


class Hypervisor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    type: str
    version: str


class NodeInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    cpus: int
    memory_mb: int
    model: str


def _public_uri(uri: str | None) -> str | None:
    return redact_uri(uri).public if uri else uri


class HostStatus(Message):
    """Retained `…/<host>/status`; `online:false` with nothing else is the MQTT will."""

    host: str
    online: bool
    agent_version: str | None = None
    libvirt_connected: bool | None = None
    # Never with credentials (SPEC §3), whoever built the status: an older agent's included.
    libvirt_uri: Annotated[str | None, AfterValidator(_public_uri)] = None
    hypervisor: Hypervisor | None = None
    node: NodeInfo | None = None
    interval_s: float | None = None
    started_at: UtcDateTime | None = None


class VmState(Message):
    """Retained `…/vm/<uuid>/state`; `seq` grows per VM, across agent restarts too."""

    host: str
    uuid: str
    name: str
    state: VmStateName
    reason: str
    is_active: bool
    vcpus: int
    memory_mb: int
    max_memory_mb: int
    autostart: bool
    persistent: bool
    seq: int


class DiskIO(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    device: str
    read_bytes: int
    write_bytes: int
    read_bps: float | None = None
    write_bps: float | None = None
    read_iops: float | None = None
    write_iops: float | None = None
    # Cumulative request counts (libvirt's rd.reqs/wr.reqs); None from agents older than them.
    read_reqs: int | None = None
    write_reqs: int | None = None


class NetIO(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    interface: str
    rx_bytes: int
    tx_bytes: int
    rx_bps: float | None = None
    tx_bps: float | None = None
    rx_errors: int = 0
    tx_errors: int = 0
    rx_drops: int = 0
    tx_drops: int = 0
    # Cumulative packet counts; None from agents older than them.
    rx_packets: int | None = None
    tx_packets: int | None = None


class VmMetrics(Message):
    """One VM's metrics: the seed's fields plus identity, rates and provenance."""

    host: str
    uuid: str
    name: str
    state: VmStateName
    cpu_percent: float | None = None
    vcpus: int
    memory_percent: float | None = None
    # Whole MiB, as the seed sent them (a Dart `as int` must keep working).
    memory_used_mb: int | None = None
    memory_total_mb: int | None = None
    memory_source: MemorySource = "none"
    disk_io: list[DiskIO] = Field(default_factory=list)
    network_io: list[NetIO] = Field(default_factory=list)
    interval_s: float | None = None
    stale: bool = False
    # Cumulative CPU time of the domain, seconds (libvirt's cpu.time); None when the VM is not
    # running, its stats could not be read, or the agent is older than the field.
    cpu_time_s: float | None = None


class HostMetrics(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    cpu_percent: float | None = None
    cpus: int | None = None
    memory_total_mb: int | None = None
    memory_free_mb: int | None = None
    vms_total: int = 0
    vms_running: int = 0
    vcpus_allocated: int = 0
    memory_allocated_mb: int = 0


class MetricsBatch(Message):
    """`…/<host>/metrics`: one per tick, the host's figures and every VM's."""

    host: str
    interval_s: float
    tick: int
    host_metrics: HostMetrics
    vms: list[VmMetrics]


class VmEvent(Message):
    """`…/<host>/events`: a lifecycle change or a command outcome (the audit trail)."""

    host: str
    kind: Literal["lifecycle", "reboot", "command", "agent"]
    uuid: str | None = None
    name: str | None = None
    event: str
    detail: str | None = None
    state: VmStateName | None = None
    # Command outcomes only.
    id: str | None = None
    action: str | None = None
    status: ReplyStatus | None = None
    by: str | None = None
    error: ErrorInfo | None = None


class CommandParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    force_after: bool = False


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class CommandRequest(Message):
    """`…/<host>/cmd`, sent as an MQTT v5 request (ResponseTopic + CorrelationData = id)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=False)

    id: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_nonblank)]
    action: Action
    vm: str
    params: CommandParams = Field(default_factory=CommandParams)
    # The latest moment the agent may begin the command's libvirt action (required, SPEC §3).
    not_after: UtcDateTime
    by: str = "unknown"


class CommandReply(Message):
    """`…/<host>/reply/<gateway_id>`: `accepted`, then one final status."""

    id: str | None
    host: str
    status: ReplyStatus
    action: str | None = None
    vm: str | None = None
    name: str | None = None
    state: VmStateName | None = None
    changed: bool | None = None
    escalated: bool | None = None
    error: ErrorInfo | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class GatewayStatus(Message):
    """Retained `…/gateway/<gateway_id>/status`, with an MQTT will."""

    gateway: str
    online: bool
    version: str | None = None


def error(code: str, message: str) -> ErrorInfo:
    return ErrorInfo(code=code, message=message)


def dump(model: BaseModel) -> bytes:
    """Wire form of a payload."""
    return model.model_dump_json(exclude_none=False).encode()


def as_dict(model: BaseModel) -> dict[str, Any]:
    """JSON-ready dict of a payload (what REST and Socket.IO send)."""
    return model.model_dump(mode="json")
