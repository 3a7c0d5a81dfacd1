"""Home Assistant discovery configs: schema keys, ids, topics and value templates, broker-free."""

from __future__ import annotations

import json
import re
from typing import Any

import jinja2
import pytest
from jinja2 import nodes

from agent.homeassistant import discovery
from shared.messages import (
    VM_STATES,
    DiskIO,
    HostMetrics,
    HostStatus,
    Hypervisor,
    MetricsBatch,
    NetIO,
    NodeInfo,
    VmMetrics,
    VmState,
    dump,
)
from shared.topics import TopicError, Topics, matches
from tests.support.hass import (
    ACCEPTED,
    COMMON,
    ENV,
    PLAIN_FILTERS,
    REQUIRED,
    STATE_CLASSES,
    UNITS,
    ha_number,
    render,
    templates,
)

pytestmark = pytest.mark.unit

HA = "homeassistant"
UUID_A = "6f1c1f0e-2b7a-4c1e-9a51-0d6f3b1a2c3d"
UUID_B = "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
NASTY_NAMES = ("web server", "a+b", "c#d", "ünïcødé 🚀", "x/+/#", "  ")
ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")


def vm_state(uuid: str = UUID_A, name: str = "web", state: str = "running", **kw: Any) -> VmState:
    fields: dict[str, Any] = dict(
        host="h1",
        uuid=uuid,
        name=name,
        state=state,
        reason="booted",
        is_active=state != "stopped",
        vcpus=2,
        memory_mb=2048,
        max_memory_mb=4096,
        autostart=False,
        persistent=True,
        seq=7,
    )
    fields.update(kw)
    return VmState(**fields)


def vm_metrics(**kw: Any) -> VmMetrics:
    fields: dict[str, Any] = dict(
        host="h1",
        uuid=UUID_A,
        name="web",
        state="running",
        cpu_percent=12.5,
        vcpus=2,
        memory_percent=25.0,
        memory_used_mb=1024.0,
        memory_total_mb=4096.0,
        memory_source="guest",
        interval_s=2.0,
        disk_io=[
            DiskIO(device="vda", read_bytes=1, write_bytes=2, read_bps=1000.0, write_bps=250.0),
            DiskIO(device="vdb", read_bytes=1, write_bytes=2, read_bps=500.0, write_bps=None),
        ],
        network_io=[NetIO(interface="vnet0", rx_bytes=1, tx_bytes=2, rx_bps=2048.0, tx_bps=512.0)],
    )
    fields.update(kw)
    return VmMetrics(**fields)


def configs(
    host: str = "h1", vm: VmState | None = None, topics: Topics | None = None, **kw: Any
) -> dict[str, dict[str, Any]]:
    """object id → decoded config of one VM."""
    out = discovery.vm_configs(host, vm or vm_state(), topics or Topics(), HA, "1.2.3", **kw)
    # A VM's object id level is `<uuid-hex>_<object>`.
    return {topic.split("/")[-2].split("_", 1)[1]: json.loads(payload) for topic, payload in out}


def host_cfgs(
    host: str = "h1", status: HostStatus | None = None, **kw: Any
) -> dict[str, dict[str, Any]]:
    out = discovery.host_configs(host, status, Topics(), HA, "1.2.3", **kw)
    return {topic.split("/")[-2]: json.loads(payload) for topic, payload in out}


def all_configs(host: str = "h1") -> list[tuple[str, dict[str, Any]]]:
    pairs = discovery.vm_configs(host, vm_state(), Topics(), HA, "1.2.3", expire_after=30)
    pairs += discovery.host_configs(host, None, Topics(), HA, "1.2.3", expire_after=10)
    return [(topic, json.loads(payload)) for topic, payload in pairs]


# -- Home Assistant's template rendering, emulated -------------------------------------------
# HA renders `value_template` in a sandboxed Jinja2 environment with `value` = the raw payload
# and `value_json` = the payload parsed as JSON, only when it parses
# (helpers/template.py async_render_with_possible_json_value), and strips the result. HA
# replaces a few builtin filters (float, int, round, ...) with its own: the templates use none
# of them (checked below), so plain Jinja2 renders them exactly as HA does. StrictUndefined is
# stricter than HA's logging Undefined: a template that passes here passes there.
# -- schema ----------------------------------------------------------------------------------
def test_every_payload_has_the_keys_home_assistant_requires() -> None:
    for topic, config in all_configs():
        component = topic.split("/")[1]
        assert REQUIRED[component] <= config.keys(), topic
        assert config.keys() <= COMMON | ACCEPTED[component], (topic, config.keys())
        assert config["name"] and config["unique_id"]
        device = config["device"]
        assert device["identifiers"] and device["name"]
        assert config["origin"] == {"name": "KVM Supervisor", "sw_version": "1.2.3"}
        assert config["qos"] in (0, 1)
        if component == "sensor" and "device_class" in config:
            cls = config["device_class"]
            if cls == "enum":
                # sensor.py: options only with device_class enum, never with a unit/state_class
                assert config["options"] and "state_class" not in config
                assert "unit_of_measurement" not in config
            else:
                assert config["unit_of_measurement"] in UNITS[cls]
                assert config["state_class"] in STATE_CLASSES[cls]


def test_origin_carries_the_support_url_when_given() -> None:
    cfg = configs(support_url="https://example.org/kvmsup")
    assert cfg["power"]["origin"]["support_url"] == "https://example.org/kvmsup"


def test_vm_entities_and_their_options() -> None:
    cfg = configs()
    assert set(cfg) == {
        "power",
        "state",
        "cpu",
        "memory_used",
        "memory_percent",
        "disk_read",
        "disk_write",
        "net_rx",
        "net_tx",
        "reboot",
        "force_off",
        "reset",
        "snapshot",
    }
    power = cfg["power"]
    assert power["optimistic"] is False
    assert (power["payload_on"], power["payload_off"]) == ("ON", "OFF")
    assert cfg["state"]["options"] == list(VM_STATES)
    assert cfg["cpu"]["unit_of_measurement"] == "%"
    assert cfg["memory_used"]["unit_of_measurement"] == "MiB"
    assert cfg["memory_used"]["device_class"] == "data_size"
    for name in ("disk_read", "disk_write", "net_rx", "net_tx"):
        assert cfg[name]["device_class"] == "data_rate"
        assert cfg[name]["unit_of_measurement"] == "B/s"
    presses = {k: cfg[k]["payload_press"] for k in ("reboot", "force_off", "reset")}
    assert presses == {"reboot": "reboot", "force_off": "destroy", "reset": "reset"}
    assert cfg["force_off"]["enabled_by_default"] is False
    assert cfg["reset"]["enabled_by_default"] is False
    assert cfg["reboot"].get("enabled_by_default", True) is True
    assert all(c["device"]["via_device"] == "kvmsup_host_h1" for c in cfg.values())


def test_host_entities() -> None:
    status = HostStatus(
        host="h1",
        online=True,
        agent_version="1.2.3",
        hypervisor=Hypervisor(type="QEMU", version="8.2.0"),
        node=NodeInfo(cpus=8, memory_mb=32768, model="x86_64"),
    )
    cfg = host_cfgs(status=status, expire_after=10)
    assert set(cfg) == {"connectivity", "vms_running"}
    conn = cfg["connectivity"]
    assert conn["device_class"] == "connectivity"
    # No availability: when the agent dies its will makes this OFF, not unavailable.
    assert "availability" not in conn and "expire_after" not in conn
    assert cfg["vms_running"]["availability"][0]["topic"] == "kvmsup/v1/h1/status"
    assert cfg["vms_running"]["expire_after"] == 10
    assert conn["device"]["identifiers"] == ["kvmsup_host_h1"]
    assert conn["device"]["sw_version"] == "1.2.3"


def test_expire_after_only_on_metric_sensors() -> None:
    cfg = configs(expire_after=30)
    for name, config in cfg.items():
        fed_by_metrics = config.get("state_topic", "").endswith("/metrics")
        assert ("expire_after" in config) == fed_by_metrics, name
    assert all("expire_after" not in c for c in configs().values())
    assert discovery.expire_after_for(2.0, 5) == 30
    assert discovery.expire_after_for(0.5, 1) == 10


# -- identities and topics -------------------------------------------------------------------
def test_unique_ids_are_unique_across_hosts_with_the_same_vm_name() -> None:
    seen: list[str] = []
    devices: set[str] = set()
    for host, uuid in (("h1", UUID_A), ("h2", UUID_B), ("h2", UUID_A), ("h1", UUID_B)):
        for config in configs(host, vm_state(uuid=uuid, name="same name")).values():
            seen.append(config["unique_id"])
            devices.update(config["device"]["identifiers"])
    for host in ("h1", "h2"):
        seen += [c["unique_id"] for c in host_cfgs(host).values()]
        devices.add(f"kvmsup_host_{host}")
    assert len(seen) == len(set(seen)) == 4 * len(discovery.VM_OBJECTS) + 2 * 2
    assert len(devices) == 4 + 2


def test_device_ids_of_a_host_and_a_vm_never_collide() -> None:
    # Host ids may contain `_`: a host named like another host's VM unique_id stem.
    tricky = f"h1_{UUID_A.replace('-', '')}"
    assert discovery.host_node_id(tricky) == discovery.vm_unique_stem("h1", UUID_A)
    assert discovery.host_device_id(tricky) != discovery.vm_device_id("h1", UUID_A)
    host_topics = set(discovery.host_config_topics(tricky, HA))
    assert host_topics.isdisjoint(discovery.config_topics("h1", UUID_A, HA))
    host_ids = {c["unique_id"] for c in host_cfgs(tricky).values()}
    assert host_ids.isdisjoint(c["unique_id"] for c in configs("h1").values())


@pytest.mark.parametrize("other", ["h2", "h1_x", "h1-2", "xh1", f"h1_{UUID_A.replace('-', '')}"])
def test_one_acl_rule_per_host_covers_its_configs_and_no_other_hosts(other: str) -> None:
    """provision.sh gives agent `h` `homeassistant/+/kvmsup_<h>/+/config` and nothing else."""
    mine = f"{HA}/+/kvmsup_h1/+/config"
    own = discovery.host_config_topics("h1", HA) + discovery.config_topics("h1", UUID_A, HA)
    assert all(matches(mine, t) for t in own)
    theirs = discovery.host_config_topics(other, HA)
    for uuid in (UUID_A, UUID_B):
        theirs += discovery.config_topics(other, uuid, HA)
    assert not any(matches(mine, t) for t in theirs)
    # The earlier layout put host and VM in one level: no whole-level rule could pin it.
    assert not any(matches(mine, t) for t in discovery.legacy_config_topics("h1", UUID_A, HA))


def test_the_layout_change_keeps_every_unique_id_and_device_identifier() -> None:
    """Pinned literally: Home Assistant keys entities, history and automations on these."""
    hexa = UUID_A.replace("-", "")
    found = configs("h1")
    assert found["power"]["unique_id"] == f"kvmsup_h1_{hexa}_power"
    assert found["force_off"]["unique_id"] == f"kvmsup_h1_{hexa}_force_off"
    assert found["power"]["device"]["identifiers"] == [f"kvmsup_vm_h1_{hexa}"]
    assert found["power"]["device"]["via_device"] == "kvmsup_host_h1"
    assert host_cfgs("h1")["connectivity"]["unique_id"] == "kvmsup_h1_connectivity"
    assert host_cfgs("h1")["connectivity"]["device"]["identifiers"] == ["kvmsup_host_h1"]
    for spec, topic in zip(
        discovery.VM_OBJECTS, discovery.config_topics("h1", UUID_A, HA), strict=True
    ):
        assert topic == f"{HA}/{spec.component}/kvmsup_h1/{hexa}_{spec.object_id}/config"


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_topics_and_ids_use_only_safe_characters(name: str) -> None:
    pairs = discovery.vm_configs("host-01_a", vm_state(name=name), Topics(), HA, "1")
    pairs += discovery.host_configs("host-01_a", None, Topics(), HA, "1")
    for topic, payload in pairs:
        prefix, component, node, obj, tail = topic.split("/")
        assert (prefix, tail) == (HA, "config")
        assert component in REQUIRED
        assert ID_RE.match(node) and ID_RE.match(obj), topic
        config = json.loads(payload)
        assert ID_RE.match(config["unique_id"])
        assert all(ID_RE.match(i) for i in config["device"]["identifiers"])
        if "via_device" in config["device"]:
            assert config["device"]["name"] == name  # the name lives in payloads only


def test_object_ids_follow_spec() -> None:
    hexa = UUID_A.replace("-", "")
    assert discovery.vm_unique_stem("h1", UUID_A) == "kvmsup_h1_" + hexa
    assert discovery.host_node_id("h1") == "kvmsup_h1"
    topics = discovery.config_topics("h1", UUID_A, HA)
    assert f"{HA}/switch/kvmsup_h1/{hexa}_power/config" in topics
    legacy = discovery.legacy_config_topics("h1", UUID_A, HA)
    assert f"{HA}/switch/kvmsup_h1_{hexa}/power/config" in legacy
    assert f"{HA}/binary_sensor/kvmsup_h1/connectivity/config" in discovery.host_config_topics(
        "h1", HA
    )


@pytest.mark.parametrize("bad", ["Bad", "gateway", "a b", "a/b", "+", ""])
def test_invalid_host_ids_are_refused(bad: str) -> None:
    with pytest.raises(TopicError):
        discovery.vm_configs(bad, vm_state(), Topics(), HA, "1")


def test_invalid_uuid_is_refused() -> None:
    with pytest.raises(TopicError):
        discovery.vm_removals("h1", "not-a-uuid", HA)


@pytest.mark.parametrize("prefix", ["kvmsup", "t0123/deep"])
def test_every_named_topic_is_one_the_agent_uses(prefix: str) -> None:
    topics = Topics(prefix)
    expected = {
        "state_topic": {"vm_state", "vm_metrics", "host_status", "host_metrics"},
        "json_attributes_topic": {"vm_state"},
        "command_topic": {"vm_set"},
    }
    for host, uuid in (("h1", UUID_A), ("other-host", UUID_B)):
        pairs = discovery.vm_configs(host, vm_state(uuid=uuid), topics, HA, "1")
        pairs += discovery.host_configs(host, None, topics, HA, "1")
        for _, payload in pairs:
            config = json.loads(payload)
            for key, kinds in expected.items():
                if key not in config:
                    continue
                parsed = topics.parse(config[key])
                assert parsed is not None and parsed.kind in kinds, (key, config[key])
                assert parsed.host == host
                if parsed.kind.startswith("vm_"):
                    assert parsed.uuid == uuid
            for avail in config.get("availability", []):
                parsed = topics.parse(avail["topic"])
                assert parsed is not None and parsed.kind == "host_status"
                assert parsed.host == host
                assert (avail["payload_available"], avail["payload_not_available"]) == (
                    "online",
                    "offline",
                )


def test_removals_cover_every_config_topic_of_both_layouts() -> None:
    removals = discovery.vm_removals("h1", UUID_A, HA)
    published = [t for t, _ in discovery.vm_configs("h1", vm_state(), Topics(), HA, "1")]
    legacy = discovery.legacy_config_topics("h1", UUID_A, HA)
    assert sorted(t for t, _ in removals) == sorted(published + legacy)
    assert len(published) == len(set(published)) == len(discovery.VM_OBJECTS)
    assert set(published).isdisjoint(legacy)
    assert all(payload == b"" for _, payload in removals)
    # After the upgrade window the earlier layout is left alone (the broker would refuse it).
    current = discovery.vm_removals("h1", UUID_A, HA, legacy=False)
    assert sorted(t for t, _ in current) == sorted(published)


def test_signature_changes_with_what_the_configs_show() -> None:
    base = discovery.vm_signature(vm_state())
    assert discovery.vm_signature(vm_state(state="stopped", seq=9, reason="x")) == base
    assert discovery.vm_signature(vm_state(name="renamed")) != base
    assert discovery.vm_signature(vm_state(vcpus=4)) != base
    assert discovery.vm_signature(vm_state(memory_mb=4096)) != base


def test_ha_status_helpers() -> None:
    assert discovery.ha_status_topic(HA) == "homeassistant/status"
    assert discovery.is_ha_online(b"online") and not discovery.is_ha_online(b"offline")
    assert discovery.ha_status(b" online\n") == "online"
    assert discovery.ha_status(b"offline") == "offline"
    for junk in (b"\xff\xfe\x00online", b"online" + b" " * 100_000, b"{}", b"", b"ONLINE"):
        assert discovery.ha_status(junk) == "junk"


# -- value templates over real payloads ------------------------------------------------------
def test_templates_use_only_filters_plain_jinja2_and_home_assistant_share() -> None:
    for _, config in all_configs():
        for template in templates(config):
            ast = ENV.parse(template)
            used = {f.name for f in ast.find_all(nodes.Filter)}
            assert used <= PLAIN_FILTERS, (template, used)
            assert used <= set(jinja2.Environment().filters)


def test_metric_sensors_give_numbers_in_their_units() -> None:
    cfg = configs()
    payload = dump(vm_metrics())

    def value(name: str) -> float | None:
        return ha_number(render(cfg[name]["value_template"], payload))

    assert value("cpu") == 12.5  # %
    assert value("memory_used") == 1024.0  # MiB
    assert value("memory_percent") == 25.0  # %
    assert value("disk_read") == 1500.0  # B/s, summed over disks
    assert value("disk_write") == 250.0  # the null rate of vdb is skipped, not counted as 0
    assert value("net_rx") == 2048.0
    assert value("net_tx") == 512.0


def test_null_metrics_give_unknown_not_zero() -> None:
    cfg = configs()
    first_sample = vm_metrics(
        cpu_percent=None,
        memory_percent=None,
        memory_used_mb=None,
        memory_total_mb=None,
        memory_source="none",
        disk_io=[DiskIO(device="vda", read_bytes=1, write_bytes=2)],
        network_io=[NetIO(interface="vnet0", rx_bytes=1, tx_bytes=2)],
    )
    no_devices = vm_metrics(disk_io=[], network_io=[])
    for name in (
        "cpu",
        "memory_used",
        "memory_percent",
        "disk_read",
        "disk_write",
        "net_rx",
        "net_tx",
    ):
        assert render(cfg[name]["value_template"], dump(first_sample)) == "None", name
        assert ha_number(render(cfg[name]["value_template"], dump(first_sample))) is None
    for name in ("disk_read", "disk_write", "net_rx", "net_tx"):
        assert render(cfg[name]["value_template"], dump(no_devices)) == "None", name


@pytest.mark.parametrize("state", VM_STATES)
def test_power_switch_and_state_sensor_follow_the_vm_state(state: str) -> None:
    cfg = configs()
    payload = dump(vm_state(state=state))
    power = render(cfg["power"]["value_template"], payload)
    on = state in ("running", "paused", "shutting_down", "suspended")
    assert power == ("ON" if on else "OFF")
    assert power in (cfg["power"]["payload_on"], cfg["power"]["payload_off"])
    rendered = render(cfg["state"]["value_template"], payload)
    assert rendered == state and rendered in cfg["state"]["options"]
    attributes = json.loads(render(cfg["state"]["json_attributes_template"], payload))
    assert attributes == {
        "reason": "booted",
        "vcpus": 2,
        "memory_mb": 2048,
        "max_memory_mb": 4096,
        "autostart": False,
        "persistent": True,
    }


def test_an_undefined_vm_empty_state_payload_renders_unknown() -> None:
    cfg = configs()
    assert render(cfg["power"]["value_template"], b"") == "None"  # switch: PAYLOAD_NONE
    assert render(cfg["state"]["value_template"], b"") == "None"
    assert json.loads(render(cfg["state"]["json_attributes_template"], b"")) == {}


def test_availability_and_connectivity_follow_the_host_status() -> None:
    vm = configs()["power"]["availability"][0]["value_template"]
    conn = host_cfgs()["connectivity"]["value_template"]
    online = dump(HostStatus(host="h1", online=True, agent_version="1", libvirt_connected=True))
    will = dump(HostStatus(host="h1", online=False))
    assert (render(vm, online), render(conn, online)) == ("online", "ON")
    assert (render(vm, will), render(conn, will)) == ("offline", "OFF")
    assert (render(vm, b""), render(conn, b"")) == ("offline", "OFF")


def test_running_vm_count_reads_the_metrics_batch() -> None:
    template = host_cfgs()["vms_running"]["value_template"]
    batch = MetricsBatch(
        host="h1",
        interval_s=2.0,
        tick=3,
        host_metrics=HostMetrics(vms_total=3, vms_running=2),
        vms=[vm_metrics()],
    )
    assert ha_number(render(template, dump(batch))) == 2
