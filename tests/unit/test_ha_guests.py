"""Home Assistant's sensors of each VM's guest (agent/homeassistant/guests.py): an IP address
and one usage sensor per filesystem, with the keys Home Assistant accepts, templates that
render what the guest said, and configs removed when a filesystem (or the VM) goes."""

from __future__ import annotations

import json
from typing import Any

import jinja2
import pytest
from jinja2 import nodes

from agent.homeassistant.discovery import vm_device_id, vm_unique_stem
from agent.homeassistant.guests import GuestEntities, fs_object_id, guest_configs
from shared.guest import GuestAddress, GuestFilesystem, GuestInfo
from shared.messages import dump
from shared.topics import Topics
from tests.support.hass import ACCEPTED, COMMON, ENV, ha_number, render, templates

pytestmark = pytest.mark.unit

T = Topics()
HOST = "kvm1"
U = "a0000000-0000-4000-8000-000000000001"
STRANGE = '/mnt/{{ x }} "quoted" %}'


def guest(*mounts: str, **extra: Any) -> GuestInfo:
    fields: dict[str, Any] = {
        "host": HOST,
        "uuid": U,
        "name": "web",
        "status": "ok",
        "address_source": "agent",
        "addresses": [
            GuestAddress(interface="eth0", family="ipv6", address="2001:db8::5", prefix=64),
            GuestAddress(interface="eth0", family="ipv4", address="192.0.2.5", prefix=24),
        ],
        "hostname": "web",
        "filesystems": [
            GuestFilesystem(mountpoint=m, type="ext4", used_bytes=250, total_bytes=1000)
            for m in mounts
        ],
        **extra,
    }
    return GuestInfo(**fields)


def configs(g: GuestInfo) -> dict[str, dict[str, Any]]:
    return {
        t: json.loads(p) for t, p in guest_configs(HOST, g, T, "homeassistant", "1.2.3").items()
    }


def by_object(g: GuestInfo) -> dict[str, dict[str, Any]]:
    return {t.split("/")[3].split("_", 1)[1]: c for t, c in configs(g).items()}


def test_an_ip_sensor_and_one_sensor_per_filesystem_with_keys_home_assistant_takes() -> None:
    cfg = configs(guest("/", STRANGE))
    hexid = U.replace("-", "")
    assert set(cfg) == {
        f"homeassistant/sensor/kvmsup_{HOST}/{hexid}_{obj}/config"
        for obj in ("ip", fs_object_id("/"), fs_object_id(STRANGE))
    }
    for config in cfg.values():
        assert config.keys() <= COMMON | ACCEPTED["sensor"], config.keys()
        assert config["unique_id"].startswith(vm_unique_stem(HOST, U) + "_")
        assert config["device"] == {"identifiers": [vm_device_id(HOST, U)], "name": "web"}
        assert config["state_topic"] == T.vm_guest(HOST, U)
        assert config["qos"] == 1
        for template in templates(config):
            used = {f.name for f in ENV.parse(template).find_all(nodes.Filter)}
            assert used <= set(jinja2.Environment().filters), used
    assert len({c["unique_id"] for c in cfg.values()}) == 3
    assert fs_object_id(STRANGE).replace("_", "").isalnum()


def test_templates_render_the_address_and_the_usage() -> None:
    g = guest("/", STRANGE)
    cfg = by_object(g)
    payload = dump(g)
    assert render(cfg["ip"]["value_template"], payload) == "192.0.2.5"  # IPv4 first
    attributes = json.loads(render(cfg["ip"]["json_attributes_template"], payload))
    assert attributes["addresses"] == ["2001:db8::5", "192.0.2.5"]
    assert attributes["source"] == "agent"
    for mount in ("/", STRANGE):
        fs = cfg[fs_object_id(mount)]
        assert fs["unit_of_measurement"] == "%" and fs["state_class"] == "measurement"
        assert ha_number(render(fs["value_template"], payload)) == 25.0
        attrs = json.loads(render(fs["json_attributes_template"], payload))
        assert attrs == {
            "mountpoint": mount,
            "type": "ext4",
            "used_bytes": 250,
            "total_bytes": 1000,
        }
    # Unknown, never zero: no guest data, a cleared topic, a filesystem gone, no address.
    fs = cfg[fs_object_id("/")]
    assert ha_number(render(fs["value_template"], dump(guest("/other")))) is None
    assert ha_number(render(fs["value_template"], b"")) is None
    assert render(cfg["ip"]["value_template"], b"") == "None"
    no_address = dump(guest(addresses=[], status="unavailable", reason="no agent"))
    assert render(cfg["ip"]["value_template"], no_address) == "None"
    sizeless = guest(filesystems=[GuestFilesystem(mountpoint="/", used_bytes=1, total_bytes=0)])
    assert ha_number(render(fs["value_template"], dump(sizeless))) is None


def test_configs_follow_the_filesystems_and_go_with_the_vm() -> None:
    sent: list[tuple[str, bytes]] = []
    entities = GuestEntities(HOST, T, "homeassistant", "1.2.3", lambda t, p: sent.append((t, p)))
    entities.changed(guest("/", "/data"))
    assert len(sent) == 3 and all(p for _, p in sent)
    sent.clear()
    entities.changed(guest("/", "/data", hostname="renamed"))  # the configs did not change
    assert sent == []
    entities.changed(guest("/"))  # /data unmounted: its sensor is removed
    data_topic = next(t for t in configs(guest("/data")) if fs_object_id("/data") in t)
    assert sent == [(data_topic, b"")]
    sent.clear()
    entities.republish()
    assert sent == []  # noted only: sent from the watcher's thread
    entities.flush()
    assert len(sent) == 2 and all(p for _, p in sent)
    sent.clear()
    entities.flush()
    assert sent == []
    entities.removed(U)
    assert sorted(t for t, _ in sent) == sorted(configs(guest("/"))) and all(not p for _, p in sent)
