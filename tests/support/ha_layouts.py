"""An agent's Home Assistant discovery before and after the per-host topic layout, and a Home
Assistant (support/hass.py) that discovered the old one: what the migration tests start from."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.homeassistant import discovery
from agent.homeassistant.entities import LEGACY_VM_OBJECTS, VM_OBJECTS
from shared.messages import VmState
from shared.topics import Topics
from tests.support.hass import HassDiscovery
from tests.support.vm_states import vm_state as running_vm

HA = "homeassistant"
UUID_A = "6f1c1f0e-2b7a-4c1e-9a51-0d6f3b1a2c3d"
UUID_B = "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"


def vm_state(uuid: str, name: str) -> VmState:
    return running_vm("h1", uuid, name, memory_mb=2048, max_memory_mb=4096)


VMS = [vm_state(UUID_A, "web"), vm_state(UUID_B, "db")]


def old_agent_configs(
    host: str, vm: VmState, topics: Topics, ha_prefix: str = HA
) -> list[tuple[str, bytes]]:
    """What an agent before the per-host layout published for a VM: the entities it had
    (entities.LEGACY_VM_OBJECTS), the same payloads, the old topics."""
    configs = discovery.vm_configs(host, vm, topics, ha_prefix, "0.9")
    kept = [c for spec, c in zip(VM_OBJECTS, configs, strict=True) if spec in LEGACY_VM_OBJECTS]
    old = discovery.legacy_config_topics(host, vm.uuid, ha_prefix)
    return [(topic, payload) for topic, (_, payload) in zip(old, kept, strict=True)]


# Entities added since the per-host layout: an upgrade brings them, beside the kept ones.
NEW_OBJECT_IDS = frozenset(s.object_id for s in VM_OBJECTS if s not in LEGACY_VM_OBJECTS)


def only_new_entities(uids: set[str], vms: int) -> bool:
    """`uids` are the entities an upgrade added: one per VM for each object added since."""
    return len(uids) == vms * len(NEW_OBJECT_IDS) and all(
        any(uid.endswith(f"_{obj}") for obj in NEW_OBJECT_IDS) for uid in uids
    )


def vm_count(uids: Iterable[str]) -> int:
    """VMs among entity unique ids `kvmsup_<host>_<uuid-hex>_<object>` (host ids hold no `_`)."""
    return len({p[2] for p in (uid.split("_") for uid in uids) if len(p) > 3 and len(p[2]) == 32})


def legacy_configs(vm: VmState) -> list[tuple[str, bytes]]:
    """What an agent before the per-host layout published for `vm` on host h1."""
    return old_agent_configs("h1", vm, Topics())


def new_configs(vm: VmState) -> list[tuple[str, bytes]]:
    return discovery.vm_configs("h1", vm, Topics(), HA, "1.0")


def upgraded_from_old_layout(*vms: VmState) -> tuple[HassDiscovery, dict[str, Any]]:
    """A Home Assistant that discovered the old agent's entities; a user renamed one."""
    hass = HassDiscovery()
    for topic, payload in discovery.host_configs("h1", None, Topics(), HA, "0.9"):
        hass.receive(topic, payload)  # the host's topics do not move
    for vm in vms:
        for topic, payload in legacy_configs(vm):
            hass.receive(topic, payload)
    assert not hass.refused and not hass.removed
    power = f"kvmsup_h1_{UUID_A.replace('-', '')}_power"
    hass.entities()[power].name = "Web power"
    return hass, snapshot(hass)


def snapshot(hass: HassDiscovery) -> dict[str, Any]:
    return {
        uid: (e.id, e.entity_id, e.name, e.device_id, e.disabled)
        for uid, e in hass.entities().items()
    }


def assert_kept(hass: HassDiscovery, before: dict[str, Any]) -> None:
    assert hass.refused == [] and hass.removed == []
    after = snapshot(hass)
    # Same entries, ids, entity_ids, names, devices; and what was added since, per VM.
    assert {uid: e for uid, e in after.items() if uid in before} == before
    assert only_new_entities(set(after) - set(before), vm_count(before)), set(after) - set(before)
    bound = hass.bound()
    assert set(bound) == set(after)  # every entity loaded (or tracked, if disabled) once
    assert all("/kvmsup_h1/" in topic for topic in bound.values()), bound
