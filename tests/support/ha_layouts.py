"""An agent's Home Assistant discovery before and after the per-host topic layout, and a Home
Assistant (support/hass.py) that discovered the old one: what the migration tests start from."""

from __future__ import annotations

from typing import Any

from agent.homeassistant import discovery
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


def legacy_configs(vm: VmState) -> list[tuple[str, bytes]]:
    """What an agent before the per-host layout published: the same payloads, old topics."""
    new = discovery.vm_configs("h1", vm, Topics(), HA, "0.9")
    old = discovery.legacy_config_topics("h1", vm.uuid, HA)
    return [(topic, payload) for topic, (_, payload) in zip(old, new, strict=True)]


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
    assert snapshot(hass) == before  # same entries, ids, entity_ids, names, devices
    bound = hass.bound()
    assert set(bound) == set(before)  # every entity loaded (or tracked, if disabled) once
    assert all("/kvmsup_h1/" in topic for topic in bound.values()), bound
