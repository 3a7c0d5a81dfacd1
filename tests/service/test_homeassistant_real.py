"""The upgrade from the old discovery layout in front of a real Home Assistant (opt-in).

Home Assistant needs a newer Python than the project's, so it is not installed by default. Run:
    pyenv install 3.13.0   # any 3.13 works for 2025.4
    ~/.pyenv/versions/3.13.0/bin/python -m venv /opt/hass
    /opt/hass/bin/pip install homeassistant==2025.4.4 home-assistant-frontend==20250411.0 \\
        paho-mqtt==2.1.0
    KVMSUP_TEST_HASS=/opt/hass/bin/hass pytest tests/service/test_homeassistant_real.py
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agent.homeassistant import discovery
from shared.topics import Topics
from tests.support.agentctl import DEMO_A
from tests.support.mqtt import Recorder
from tests.support.procs import demo_node_uri
from tests.support.vm_states import vm_state

pytestmark = [
    pytest.mark.service,
    pytest.mark.skipif(
        not os.environ.get("KVMSUP_TEST_HASS"),
        reason="opt-in: Home Assistant needs a newer Python than the project's and no install "
        "step provides it; set KVMSUP_TEST_HASS to a hass binary (see the module docstring)",
    ),
]

HA = "homeassistant"
TOPICS = Topics()
WEB_POWER = f"kvmsup_demo-a_{DEMO_A['web-01'].replace('-', '')}_power"


def mqtt_entry(port: int) -> dict[str, Any]:
    """The MQTT integration's config entry, as the UI would have stored it."""
    return {
        "entry_id": "01JKVMSUPMQTT0000000000000",
        "version": 1,
        "minor_version": 2,
        "domain": "mqtt",
        "title": "mqtt",
        "data": {"broker": "127.0.0.1", "port": port},
        "options": {"discovery": True, "discovery_prefix": HA},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "unique_id": None,
        "disabled_by": None,
        "discovery_keys": {},
        "subentries": [],
        "created_at": "2025-01-01T00:00:00+00:00",
        "modified_at": "2025-01-01T00:00:00+00:00",
    }


class Hass:
    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        storage = config / ".storage"
        storage.mkdir(parents=True)
        (config / "configuration.yaml").write_text(
            "homeassistant:\n  name: kvmsup\n  time_zone: UTC\n"
            "logger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: info\n"
        )
        entries = {"entries": [mqtt_entry(port)]}
        stored = {"version": 1, "minor_version": 5, "key": "core.config_entries", "data": entries}
        (storage / "core.config_entries").write_text(json.dumps(stored))
        self.registry_file = storage / "core.entity_registry"
        self.log = config / "hass.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [os.environ["KVMSUP_TEST_HASS"], "-c", str(self.config), "--skip-pip"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)
            self.proc = None

    def ids(self) -> dict[str, tuple[str, str, str | None, str]]:
        """unique_id -> (registry id, entity_id, user's name, device id)."""
        return {
            u: (e["id"], e["entity_id"], e["name"], e["device_id"])
            for u, e in self.registry().items()
        }

    def registry(self) -> dict[str, dict[str, Any]]:
        """unique_id -> entry of the saved registry (Home Assistant saves 10 s after a change)."""
        if not self.registry_file.exists():
            return {}
        data = json.loads(self.registry_file.read_text())["data"]
        return {e["unique_id"]: e for e in data["entities"]}


def until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(1)


def test_upgrade_keeps_entities_ids_and_a_users_rename_in_real_home_assistant(
    broker, start_agent, tmp_path
):
    old = Recorder(broker.port)  # what an agent before the per-host layout left retained
    for topic, payload in discovery.host_configs("demo-a", None, TOPICS, HA, "0.9"):
        old.publish(topic, payload, retain=True)
    for name, uuid in DEMO_A.items():
        vm = vm_state("demo-a", uuid, name, vcpus=1, memory_mb=512, max_memory_mb=512)
        configs = discovery.vm_configs("demo-a", vm, TOPICS, HA, "0.9")
        for topic, (_, payload) in zip(
            discovery.legacy_config_topics("demo-a", uuid, HA), configs, strict=True
        ):
            old.publish(topic, payload, retain=True)
    old.close()
    expected = len(discovery.HOST_OBJECTS) + len(DEMO_A) * len(discovery.VM_OBJECTS)

    hass = Hass(tmp_path / "hass", broker.port)
    try:
        hass.start()
        until(lambda: sum(u.startswith("kvmsup_") for u in hass.registry()) >= expected, 240)
        hass.stop()
        # The user renames web-01's power switch (entity_id and name), as from the UI.
        data = json.loads(hass.registry_file.read_text())
        for entry in data["data"]["entities"]:
            if entry["unique_id"] == WEB_POWER:
                entry["entity_id"], entry["name"] = "switch.webserver_power", "Webserver"
        hass.registry_file.write_text(json.dumps(data))
        hass.start()
        time.sleep(20)
        before = hass.ids()

        agent = start_agent("demo-a", demo_node_uri("demo-a"))
        until(lambda: "(4 VMs moved)" in agent.output(), 60)
        time.sleep(20)  # the registry is saved 10 s after a change
        after = hass.ids()
    finally:
        hass.stop()
    log = hass.log.read_text(errors="replace")
    assert after == before and after[WEB_POWER][1:3] == ("switch.webserver_power", "Webserver")
    deleted = json.loads(hass.registry_file.read_text())["data"].get("deleted_entities", [])
    assert deleted == []
    assert "does not generate unique IDs" not in log and "Removing component" not in log
    enabled = [s for s in discovery.VM_OBJECTS if "enabled_by_default" not in s.options]
    assert log.count("Unloading component") == len(DEMO_A) * len(enabled)
    # Loaded again from the new topics when it stopped: its states were saved for restore.
    saved = json.loads((hass.config / ".storage" / "core.restore_state").read_text())["data"]
    assert "switch.webserver_power" in {s["state"]["entity_id"] for s in saved}
