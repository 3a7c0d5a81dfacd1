"""Topic building and parsing (SPEC §3): VM names never reach a topic, ids are validated."""

from __future__ import annotations

import pytest

from shared.topics import (
    POLICY,
    ParsedTopic,
    TopicError,
    Topics,
    matches,
    validate_host_id,
    validate_prefix,
    validate_uuid,
)

pytestmark = pytest.mark.unit

U = "0f1e2d3c-4b5a-4968-8776-655443322110"
T = Topics()


def test_default_prefix_builds_every_topic() -> None:
    assert T.host_status("kvm1") == "kvmsup/v1/kvm1/status"
    assert T.host_metrics("kvm1") == "kvmsup/v1/kvm1/metrics"
    assert T.host_events("kvm1") == "kvmsup/v1/kvm1/events"
    assert T.vm_state("kvm1", U) == f"kvmsup/v1/kvm1/vm/{U}/state"
    assert T.vm_metrics("kvm1", U) == f"kvmsup/v1/kvm1/vm/{U}/metrics"
    assert T.vm_set("kvm1", U) == f"kvmsup/v1/kvm1/vm/{U}/set"
    assert T.cmd("kvm1") == "kvmsup/v1/kvm1/cmd"
    assert T.reply("kvm1", "gw-a") == "kvmsup/v1/kvm1/reply/gw-a"
    assert T.gateway_status("gw-a") == "kvmsup/v1/gateway/gw-a/status"


ROUND_TRIPS = [
    (T.host_status("kvm1"), ParsedTopic("host_status", host="kvm1")),
    (T.host_metrics("kvm1"), ParsedTopic("host_metrics", host="kvm1")),
    (T.host_events("kvm1"), ParsedTopic("host_events", host="kvm1")),
    (T.cmd("kvm1"), ParsedTopic("cmd", host="kvm1")),
    (T.vm_state("kvm1", U), ParsedTopic("vm_state", host="kvm1", uuid=U)),
    (T.vm_metrics("kvm1", U), ParsedTopic("vm_metrics", host="kvm1", uuid=U)),
    (T.vm_set("kvm1", U), ParsedTopic("vm_set", host="kvm1", uuid=U)),
    (T.vm_snapshots("kvm1", U), ParsedTopic("vm_snapshots", host="kvm1", uuid=U)),
    (T.reply("kvm1", "gw_1"), ParsedTopic("reply", host="kvm1", gateway_id="gw_1")),
    (T.gateway_status("gw_1"), ParsedTopic("gateway_status", gateway_id="gw_1")),
    (T.vm_guest("kvm1", U), ParsedTopic("vm_guest", host="kvm1", uuid=U)),
]


@pytest.mark.parametrize(("topic", "parsed"), ROUND_TRIPS)
def test_parse_round_trip(topic: str, parsed: ParsedTopic) -> None:
    assert T.parse(topic) == parsed


def test_round_trip_covers_every_kind() -> None:
    assert {p.kind for _, p in ROUND_TRIPS} == set(POLICY)


@pytest.mark.parametrize(
    "topic",
    [
        "other/v1/kvm1/status",
        "kvmsupx/v1/kvm1/status",
        "kvmsup/v2/kvm1/status",
        "kvmsup/v1",
        "kvmsup/v1/",
        "kvmsup",
        "homeassistant/switch/kvm1/config",
        "$SYS/broker/uptime",
        # wildcard levels are filters, never topics
        "kvmsup/v1/+/status",
        "kvmsup/v1/#",
        "kvmsup/v1/kvm1/vm/+/state",
        "kvmsup/v1/kvm1/vm/#",
        "kvmsup/v1/kvm1/reply/+",
        "kvmsup/v1/gateway/+/status",
        # bad uuids
        "kvmsup/v1/kvm1/vm/not-a-uuid/state",
        f"kvmsup/v1/kvm1/vm/{U.upper()}/state",
        f"kvmsup/v1/kvm1/vm/{U[:-1]}/state",
        "kvmsup/v1/kvm1/vm/my vm/state",
        # the reserved host and unknown shapes
        "kvmsup/v1/gateway/status",
        f"kvmsup/v1/gateway/vm/{U}/state",
        "kvmsup/v1/gateway/cmd",
        "kvmsup/v1/kvm1/unknown",
        f"kvmsup/v1/kvm1/vm/{U}/unknown",
        f"kvmsup/v1/kvm1/vm/{U}/state/extra",
        "kvmsup/v1/kvm1/status/extra",
        "kvmsup/v1/kvm1/reply/gw/extra",
        "kvmsup/v1/KVM1/status",
        "kvmsup/v1/gateway/gw/status/extra",
    ],
)
def test_parse_rejects(topic: str) -> None:
    assert T.parse(topic) is None


@pytest.mark.parametrize(
    "name", ["my vm", "a+b", "a#b", "web/01", "db 🐘", "#", "+", "Ubuntu 24.04"]
)
def test_vm_names_never_reach_a_topic(name: str) -> None:
    with pytest.raises(TopicError):
        validate_uuid(name)
    for build in (T.vm_state, T.vm_metrics, T.vm_set):
        with pytest.raises(TopicError):
            build("kvm1", name)


@pytest.mark.parametrize("host", ["kvm1", "a", "0", "node_7-b", "a" * 63])
def test_valid_host_ids(host: str) -> None:
    assert validate_host_id(host) == host
    assert T.parse(T.host_status(host)) == ParsedTopic("host_status", host=host)


@pytest.mark.parametrize(
    "host",
    [
        "gateway",
        "",
        "KVM1",
        "-kvm",
        "_kvm",
        "kvm.local",
        "kvm 1",
        "kvm/1",
        "kvm+",
        "kvm#",
        "a" * 64,
        "kvm1/#",
        "héte",
    ],
)
def test_invalid_host_ids(host: str) -> None:
    with pytest.raises(TopicError, match="invalid host id"):
        validate_host_id(host)
    with pytest.raises(TopicError):
        T.host_status(host)


def test_gateway_id_must_be_a_single_level() -> None:
    for bad in ("gw/x", "+", "#", "GW", ""):
        with pytest.raises(TopicError):
            T.reply("kvm1", bad)
        with pytest.raises(TopicError):
            T.gateway_status(bad)


@pytest.mark.parametrize("prefix", ["home", "a/b", "lab-1/kvm_sup"])
def test_custom_prefix(prefix: str) -> None:
    t = Topics(prefix)
    topic = t.vm_state("kvm1", U)
    assert topic == f"{prefix}/v1/kvm1/vm/{U}/state"
    assert t.parse(topic) == ParsedTopic("vm_state", host="kvm1", uuid=U)
    assert t.parse(t.gateway_status("gw")) == ParsedTopic("gateway_status", gateway_id="gw")
    # Topics of the default prefix are not this instance's.
    assert t.parse(T.vm_state("kvm1", U)) is None
    assert T.parse(topic) is None


def test_two_level_prefix_does_not_match_its_first_level_alone() -> None:
    assert Topics("a/b").parse("a/v1/kvm1/status") is None
    assert Topics("a").parse("a/b/v1/kvm1/status") is None


@pytest.mark.parametrize("prefix", ["", "/", "a/", "/a", "a//b", "a/+", "#", "a b", "$SYS", "ä"])
def test_invalid_prefixes_refused(prefix: str) -> None:
    with pytest.raises(TopicError):
        validate_prefix(prefix)
    with pytest.raises(TopicError):
        Topics(prefix)


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+", "a", False),
        ("a/+/c", "a//c", True),
        ("+/+", "a/b", True),
        ("a/#", "a/b/c", True),
        ("a/#", "a", True),  # '#' also matches the parent level (MQTT 4.7.1.2)
        ("a/#", "b/c", False),
        ("#", "a/b", True),
        ("a", "a/b", False),
        ("kvmsup/v1/+/vm/+/state", f"kvmsup/v1/kvm1/vm/{U}/state", True),
        ("kvmsup/v1/+/vm/+/state", f"kvmsup/v1/kvm1/vm/{U}/set", False),
        # $-topics are not matched by a leading wildcard (MQTT 4.7.2)
        ("#", "$SYS/broker/uptime", False),
        ("+/broker/uptime", "$SYS/broker/uptime", False),
        ("$SYS/#", "$SYS/broker/uptime", True),
        ("$SYS/+/uptime", "$SYS/broker/uptime", True),
    ],
)
def test_matches(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


def test_reply_prefix() -> None:
    assert T.reply_prefix("kvm1") == "kvmsup/v1/kvm1/reply/"
    assert T.reply("kvm1", "gw").startswith(T.reply_prefix("kvm1"))
    with pytest.raises(TopicError):
        T.reply_prefix("gateway")


def test_gateway_subscriptions() -> None:
    subs = T.gateway_subscriptions("gw1")
    assert subs == [
        "kvmsup/v1/+/status",
        "kvmsup/v1/+/vm/+/state",
        "kvmsup/v1/+/vm/+/snapshots",
        "kvmsup/v1/+/metrics",
        "kvmsup/v1/+/events",
        "kvmsup/v1/+/reply/gw1",
        "kvmsup/v1/+/vm/+/guest",
    ]
    # It hears its own replies and its fellows' nothing.
    assert any(matches(s, T.reply("kvm1", "gw1")) for s in subs)
    assert not any(matches(s, T.reply("kvm1", "gw2")) for s in subs)
    assert not any(matches(s, T.cmd("kvm1")) for s in subs)
    with pytest.raises(TopicError):
        T.gateway_subscriptions("gw/1")


def test_agent_subscriptions() -> None:
    subs = T.agent_subscriptions("kvm1")
    assert subs == ["kvmsup/v1/kvm1/cmd", "kvmsup/v1/kvm1/vm/+/set", "kvmsup/v1/kvm1/vm/+/state"]
    assert any(matches(s, T.vm_set("kvm1", U)) for s in subs)
    assert not any(matches(s, T.vm_set("kvm2", U)) for s in subs)
    assert not any(matches(s, T.cmd("kvm2")) for s in subs)
    with pytest.raises(TopicError):
        T.agent_subscriptions("gateway")


def test_policy_follows_the_spec_table() -> None:
    retained = {k for k, p in POLICY.items() if p.retain}
    assert retained == {"host_status", "vm_state", "vm_snapshots", "gateway_status", "vm_guest"}
    assert POLICY["host_metrics"].qos == 0
    assert POLICY["vm_metrics"].qos == 0
    assert all(p.qos == 1 for k, p in POLICY.items() if k not in ("host_metrics", "vm_metrics"))


def test_host_id_with_trailing_newline_is_refused() -> None:
    with pytest.raises(TopicError):
        validate_host_id("kvm1\n")


def test_uuid_with_trailing_newline_is_refused() -> None:
    with pytest.raises(TopicError):
        validate_uuid(U + "\n")


def test_prefix_with_trailing_newline_is_refused() -> None:
    with pytest.raises(TopicError):
        validate_prefix("kvmsup\n")


def test_parse_refuses_host_with_newline() -> None:
    assert Topics().parse("kvmsup/v1/kvm1\n/status") is None
