"""The move to per-host discovery topics, against Home Assistant's bookkeeping (support/hass.py):
the order that keeps every registry entry, the orders that lose them, and the publisher's rounds."""

from __future__ import annotations

import pytest

from agent.homeassistant import discovery
from tests.support.ha_layouts import (
    HA,
    UUID_A,
    VMS,
    assert_kept,
    new_configs,
    upgraded_from_old_layout,
)

pytestmark = pytest.mark.unit


# -- the handshake, and why --------------------------------------------------------------------
def test_marker_then_new_config_then_empty_old_topic_keeps_every_registry_entry() -> None:
    hass, before = upgraded_from_old_layout(*VMS)
    for vm in VMS:
        for topic, payload in discovery.migration_markers("h1", vm.uuid, HA):
            hass.receive(topic, payload)
        for topic, payload in new_configs(vm):
            hass.receive(topic, payload)
        for topic, payload in discovery.legacy_removals("h1", vm.uuid, HA):
            hass.receive(topic, payload)
    assert_kept(hass, before)
    # The disabled-by-default buttons moved too, and stay disabled.
    assert before[f"kvmsup_h1_{UUID_A.replace('-', '')}_force_off"][4] is True


def test_emptying_the_old_topic_first_removes_the_registry_entries() -> None:
    hass, before = upgraded_from_old_layout(*VMS)
    for vm in VMS:
        for topic, payload in discovery.legacy_removals("h1", vm.uuid, HA):
            hass.receive(topic, payload)
        for topic, payload in new_configs(vm):
            hass.receive(topic, payload)
    # Home Assistant removed every entity (and the devices with them) before recreating them,
    # and the user's rename did not come back.
    assert len(hass.removed) == len(VMS) * len(discovery.VM_OBJECTS)
    power = f"kvmsup_h1_{UUID_A.replace('-', '')}_power"
    assert hass.entities()[power].name is None and before[power][2] == "Web power"
    with pytest.raises(AssertionError):
        assert_kept(hass, before)


def test_new_topic_first_is_refused_then_emptying_the_old_one_loses_the_entities() -> None:
    hass, before = upgraded_from_old_layout(*VMS)
    for vm in VMS:
        for topic, payload in new_configs(vm):
            hass.receive(topic, payload)
    # Loaded from the old topics, the unique_ids refuse the new ones ("does not generate
    # unique IDs"), except the disabled buttons, which are not loaded.
    enabled = [spec for spec in discovery.VM_OBJECTS if "enabled_by_default" not in spec.options]
    assert len(hass.refused) == len(VMS) * len(enabled)
    for vm in VMS:
        for topic, payload in discovery.legacy_removals("h1", vm.uuid, HA):
            hass.receive(topic, payload)
    assert hass.removed and len(hass.bound()) < len(before)
