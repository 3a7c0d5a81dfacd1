"""Snapshot commands on the executor's path: the order a request makes, its call and its wait.

A snapshot command is admitted, guarded and answered like a lifecycle command (one deadline, the
action begun only through the deadline's guard, never late); what differs is here: the libvirt
order, how long its call may take once begun (a guest's memory is written out: the request's
`timeout_s`), and the state it leaves (a revert's is read back from libvirt).
"""

from __future__ import annotations

from agent.commands.outcomes import Progress
from agent.hypervisor import Hypervisor, SnapshotOrder
from agent.hypervisor.operations import Guard
from agent.inventory import Inventory
from shared.messages import SNAPSHOT_ACTIONS, CommandRequest
from shared.snapshots import SnapshotCreateParams, SnapshotParams


def is_snapshot(request: CommandRequest) -> bool:
    return request.action in SNAPSHOT_ACTIONS


def order_of(request: CommandRequest, limit: int) -> SnapshotOrder:
    """The libvirt order of a snapshot request (its params were validated for its action)."""
    params = request.params
    assert isinstance(params, SnapshotParams)
    if isinstance(params, SnapshotCreateParams):
        return SnapshotOrder(request.action, params.name, params.description, params.memory, limit)
    return SnapshotOrder(request.action, params.name)


def call_timeout(request: CommandRequest, default: float) -> float:
    """How long the command's begun action may take before it is reported outcome_unknown."""
    params = request.params
    if isinstance(params, SnapshotParams):
        return max(default, params.timeout_s)
    return default


def act(
    hypervisor: Hypervisor,
    inventory: Inventory,
    request: CommandRequest,
    guard: Guard,
    progress: Progress,
    limit: int,
) -> None:
    """On the call worker, after the state before was read and found to allow the action."""
    hypervisor.snapshot(request.vm, order_of(request, limit), guard=guard)
    progress.acted = True
    if request.action == "snapshot_revert":
        # The snapshot's own state decides (a running one comes back running).
        state, _reason = hypervisor.domain_state(request.vm)
        progress.after = inventory.state_name(request.vm, state)
    else:
        progress.after = progress.before
