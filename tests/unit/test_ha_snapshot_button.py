"""Home Assistant's "Take snapshot" button: its discovery config, and the agent turning its
press (a plain `set` word) into a `snapshot_create` with a generated name."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from agent.commands.requests import Rejection, decode_set
from agent.homeassistant import discovery
from shared.snapshots import SnapshotCreateParams
from shared.topics import Topics
from tests.support.vm_states import vm_state

pytestmark = pytest.mark.unit

UUID = "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"


def test_each_vm_has_a_take_snapshot_button_that_sends_the_snapshot_word() -> None:
    out = discovery.vm_configs("h1", vm_state("h1", UUID), Topics(), "homeassistant", "1.2.3")
    # A VM's object id level is `<uuid-hex>_<object>`.
    configs = {t.split("/")[-2].split("_", 1)[1]: json.loads(p) for t, p in out}
    button = configs["snapshot"]
    assert button["unique_id"].endswith("_snapshot")
    assert button["name"] == "Take snapshot" and button["payload_press"] == "snapshot"
    assert button["command_topic"] == Topics().vm_set("h1", UUID)
    assert button["retain"] is False and button.get("enabled_by_default", True) is True


def test_a_press_becomes_a_snapshot_with_memory_named_after_its_time() -> None:
    now = datetime(2026, 12, 7, 20, 15, 3, 250_000, tzinfo=UTC)
    for word in (b"snapshot", b"SNAPSHOT", b" Snapshot\n"):
        request = decode_set(word, UUID, "set-1", now)
        assert not isinstance(request, Rejection)
        assert (request.action, request.vm, request.by) == ("snapshot_create", UUID, "mqtt-set")
        assert request.params == SnapshotCreateParams(
            name="ha-20261207-201503", description="taken from Home Assistant", memory=True
        )
        assert (request.not_after - now).total_seconds() == 30


@pytest.mark.parametrize("word", [b"snapshot_revert", b"SNAPSHOT_DELETE", b"snapshot_create"])
def test_no_other_snapshot_action_comes_from_a_bare_word(word: bytes) -> None:
    decoded = decode_set(word, UUID, "set-1", datetime.now(UTC))
    assert isinstance(decoded, Rejection) and decoded.code == "unknown_action"
