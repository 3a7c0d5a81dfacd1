"""The gateway's side of snapshots, pure: decoding the retained list, keeping it per VM (gone
with the VM), and reading a snapshot route's body into its action's params."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.core.ingest import Drop, SnapshotsCleared, decode
from gateway.core.job import final_budget, params_of
from gateway.core.state import StateCache
from gateway.errors import InvalidInput
from gateway.inputs import snapshot_command_of
from shared.messages import CommandParams, SnapshotInfo, VmSnapshots, dump
from shared.snapshots import SnapshotCreateParams, SnapshotParams
from shared.topics import Topics
from tests.support.vm_states import vm_state

pytestmark = pytest.mark.unit

T = Topics()
U = "b0000000-0000-4000-8000-000000000001"
OTHER = "b0000000-0000-4000-8000-000000000002"


def snapshots(uuid: str = U, *names: str, ts: datetime | None = None) -> VmSnapshots:
    created = datetime(2026, 12, 1, tzinfo=UTC)
    return VmSnapshots(
        host="h1",
        uuid=uuid,
        name="web",
        ts=ts or datetime.now(UTC),
        snapshots=[
            SnapshotInfo(name=n, created=created, state="running", has_memory=True, current=False)
            for n in names
        ],
    )


def test_the_list_is_decoded_and_an_empty_one_is_a_clearing() -> None:
    decoded = decode(T, "gw", T.vm_snapshots("h1", U), dump(snapshots(U, "s1")))
    assert isinstance(decoded, VmSnapshots) and decoded.snapshots[0].name == "s1"
    assert decode(T, "gw", T.vm_snapshots("h1", U), b"") == SnapshotsCleared("h1", U)


def test_a_list_naming_another_vm_or_host_is_dropped() -> None:
    wrong_vm = decode(T, "gw", T.vm_snapshots("h1", OTHER), dump(snapshots(U)))
    assert isinstance(wrong_vm, Drop) and wrong_vm.reason == "identity"
    wrong_host = decode(T, "gw", T.vm_snapshots("h2", U), dump(snapshots(U)))
    assert isinstance(wrong_host, Drop) and wrong_host.reason == "identity"


def test_the_cache_keeps_a_list_per_known_vm_and_drops_it_with_the_vm() -> None:
    cache = StateCache()
    seen: list[str] = []
    cache.listen(lambda kind, _item: seen.append(kind))
    assert not cache.apply_vm_snapshots(snapshots(U, "s1"))  # no state for it: not kept
    cache.apply_vm_state(vm_state("h1", U))
    now = datetime.now(UTC)
    assert cache.apply_vm_snapshots(snapshots(U, "s1", ts=now))
    assert not cache.apply_vm_snapshots(snapshots(U, ts=now - timedelta(seconds=1)))  # older
    held = cache.snapshots_of(("h1", U))
    assert held is not None and [s.name for s in held.snapshots] == ["s1"]
    assert seen.count("vm_snapshots") == 1
    cache.clear_snapshots(("h1", U))
    assert cache.snapshots_of(("h1", U)) is None
    cache.apply_vm_snapshots(snapshots(U, "s2"))
    cache.remove_vm("h1", U)
    assert cache.snapshots_of(("h1", U)) is None


def test_a_route_body_becomes_its_action_s_params() -> None:
    create = snapshot_command_of("snapshot_create", None, {"name": "s1", "memory": False})
    assert create == SnapshotCreateParams(name="s1", memory=False)
    revert = snapshot_command_of("snapshot_revert", "s1", {"confirm": "web"})
    assert revert == SnapshotParams(name="s1")


@pytest.mark.parametrize(
    ("action", "snap", "body"),
    [
        ("snapshot_create", None, None),  # no name
        ("snapshot_create", None, {"name": "a/b"}),
        ("snapshot_create", None, {"name": "s", "memory": "yes"}),
        ("snapshot_create", None, {"name": "s", "confirm": "web"}),
        ("snapshot_revert", "s", {"confirm": "web", "name": "t"}),  # the path names it
        ("snapshot_delete", "..", {"confirm": "web"}),
        ("snapshot_delete", "s", ["confirm"]),
    ],
)
def test_a_bad_body_is_a_400(action: str, snap: str | None, body: object) -> None:
    with pytest.raises(InvalidInput):
        snapshot_command_of(action, snap, body)


def test_a_snapshot_job_waits_for_its_own_timeout_s() -> None:
    assert final_budget("snapshot_create", SnapshotCreateParams(name="s", timeout_s=600)) > 600
    assert final_budget("start", CommandParams()) < 600
    assert params_of("snapshot_delete", {"name": "s"}) == SnapshotParams(name="s")
    with pytest.raises(ValueError):
        params_of("snapshot_delete", {"force_after": True})
