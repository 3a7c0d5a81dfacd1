"""Agent settings (SPEC §8): defaults, seed names, host id rules, credentials kept out of view."""

from __future__ import annotations

import logging
import os
import socket

import pytest
from pydantic import ValidationError

from agent.config import AgentSettings
from shared.broker_url import parse_broker_url
from shared.messages import HostStatus
from shared.redact import ScrubFilter, redact_uri

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the environment only: start every test from an empty one."""
    for name in list(os.environ):
        if name.startswith("KVMSUP_") or name == "LIBVIRT_URI":
            monkeypatch.delenv(name)
    monkeypatch.setattr(socket, "gethostname", lambda: "KVM-Node1.example.org")


def test_defaults_follow_spec_table() -> None:
    s = AgentSettings()
    assert s.libvirt_uri == "qemu:///system"
    assert s.mqtt_url == "mqtt://127.0.0.1:1883"
    assert s.topic_prefix == "kvmsup"
    assert s.mqtt_keepalive == 15
    assert s.host_id == "kvm-node1"  # hostname, lowercased
    assert s.metrics_interval == 2
    assert s.vm_metrics_every == 5
    assert s.memory_stats_period == 5
    assert s.ha_discovery is True
    assert s.ha_prefix == "homeassistant"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMSUP_HOST_ID", "rack2_node-7")
    monkeypatch.setenv("KVMSUP_TOPIC_PREFIX", "lab/kvm")
    monkeypatch.setenv("KVMSUP_METRICS_INTERVAL", "0.5")
    monkeypatch.setenv("KVMSUP_VM_METRICS_EVERY", "3")
    monkeypatch.setenv("KVMSUP_MEMORY_STATS_PERIOD", "0")
    monkeypatch.setenv("KVMSUP_HA_DISCOVERY", "false")
    monkeypatch.setenv("KVMSUP_MQTT_KEEPALIVE", "30")
    s = AgentSettings()
    assert s.host_id == "rack2_node-7"
    assert s.topic_prefix == "lab/kvm"
    assert s.metrics_interval == 0.5
    assert s.vm_metrics_every == 3
    assert s.memory_stats_period == 0
    assert s.ha_discovery is False
    assert s.mqtt_keepalive == 30


def test_libvirt_uri_is_read_without_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBVIRT_URI", "test:///default")
    assert AgentSettings().libvirt_uri == "test:///default"


@pytest.mark.parametrize("host", ["gateway", "My Host", "UPPER", "-lead", "a.b", "x" * 64, ""])
def test_invalid_host_id_refused_clearly(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("KVMSUP_HOST_ID", host)
    with pytest.raises(ValidationError) as info:
        AgentSettings()
    assert [e["loc"] for e in info.value.errors()] == [("host_id",)]
    message = str(info.value)
    assert "host_id" in message
    assert "invalid host id" in message
    assert "^[a-z0-9][a-z0-9_-]{0,62}$" in message


def test_reserved_hostname_is_refused_as_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "Gateway")
    with pytest.raises(ValidationError, match="invalid host id") as info:
        AgentSettings()
    assert [e["loc"] for e in info.value.errors()] == [("host_id",)]


@pytest.mark.parametrize("prefix", ["a//b", "kvm/+", "#", "with space", ""])
def test_invalid_topic_prefix_refused(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    monkeypatch.setenv("KVMSUP_TOPIC_PREFIX", prefix)
    with pytest.raises(ValidationError, match="invalid topic prefix") as info:
        AgentSettings()
    assert [e["loc"] for e in info.value.errors()] == [("topic_prefix",)]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KVMSUP_MQTT_URL", "http://broker:1883"),
        ("KVMSUP_METRICS_INTERVAL", "0"),
        ("KVMSUP_VM_METRICS_EVERY", "0"),
        ("KVMSUP_MEMORY_STATS_PERIOD", "-1"),
        ("KVMSUP_MQTT_KEEPALIVE", "1"),
    ],
)
def test_out_of_range_values_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        AgentSettings()
    field = name.removeprefix("KVMSUP_").lower()  # the setting the variable sets
    assert [e["loc"] for e in info.value.errors()] == [(field,)]


@pytest.mark.parametrize(
    ("uri", "public"),
    [
        ("qemu:///system", "qemu:///system"),
        ("test:///default", "test:///default"),
        ("qemu+ssh://root:hunter2@kvm1.lan:2222/system", "qemu+ssh://kvm1.lan:2222/system"),
        ("qemu+tcp://admin:s3cr%40t@10.0.0.5/system", "qemu+tcp://10.0.0.5/system"),
        ("qemu+ssh://root@kvm1/system?keyfile=/k", "qemu+ssh://kvm1/system?keyfile=/k"),
        ("test://u:hunter2@/n.xml?password=hunter2&x=1", "test:///n.xml?password=***&x=1"),
        # A password with `/`, `#` or `?` left unencoded still never shows.
        ("qemu+ssh://u:hun/ter2@kvm1/system", "qemu+ssh://kvm1/system"),
        ("qemu+ssh://u:hun#ter2@kvm1/system", "qemu+ssh://kvm1/system"),
        ("qemu+ssh://u:hun?ter2@kvm1/system?no_tty=1", "qemu+ssh://kvm1/system?no_tty=1"),
        ("test:///node@1.xml", "test:///node@1.xml"),
        # Both `@` and `/` unencoded: the credentials run to the last `@` before the query.
        ("qemu+ssh://u:hun@ter2/w0rd@kvm1/system", "qemu+ssh://kvm1/system"),
        ("qemu+ssh://u:hun/ter2@x@kvm1/system?no_tty=1", "qemu+ssh://kvm1/system?no_tty=1"),
        ("qemu+tls://kvm1.lan/system", "qemu+tls://kvm1.lan/system"),
    ],
)
def test_public_libvirt_uri_strips_credentials(uri: str, public: str) -> None:
    s = AgentSettings(libvirt_uri=uri)
    assert s.public_libvirt_uri() == public
    assert "ter2" not in s.public_libvirt_uri()
    assert "ter2" not in repr(s)


def test_libvirt_errors_quoting_the_uri_are_scrubbed() -> None:
    redacted = AgentSettings(
        libvirt_uri="qemu+tcp://admin:s3cr%40t@10.0.0.5/system"
    ).libvirt_redacted
    for message in (
        "unable to connect to qemu+tcp://admin:s3cr%40t@10.0.0.5/system: refused",
        "authentication failed for admin:s3cr@t",
        "password s3cr@t rejected",
    ):
        assert "s3cr" not in redacted.scrub(message), message
    assert redacted.scrub("no driver for qemu+tcp://admin:s3cr%40t@10.0.0.5/system") == (
        "no driver for qemu+tcp://10.0.0.5/system"
    )
    assert redact_uri("qemu:///system").scrub("any text") == "any text"


def test_a_password_with_at_and_slash_never_reaches_text() -> None:
    redacted = redact_uri("qemu+ssh://user:p@ss/w0rd@host/system")
    assert redacted.public == "qemu+ssh://host/system"
    message = "cannot connect to qemu+ssh://user:p@ss/w0rd@host/system: p@ss/w0rd refused"
    scrubbed = redacted.scrub(message)
    assert "w0rd" not in scrubbed and "p@ss" not in scrubbed, scrubbed


def test_a_short_password_is_redacted_from_the_uri_but_does_not_garble_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redacted = redact_uri("qemu+ssh://root:c@kvm1/system")
    assert redacted.public == "qemu+ssh://kvm1/system"
    assert redacted.scrub("cannot connect to qemu+ssh://root:c@kvm1/system") == (
        "cannot connect to qemu+ssh://kvm1/system"
    )
    log = logging.getLogger("test.scrub.short")
    scrub = ScrubFilter(redacted)
    caplog.handler.addFilter(scrub)
    try:
        log.warning("cannot connect to %s", "qemu+ssh://root:c@kvm1/system")
    finally:
        caplog.handler.removeFilter(scrub)
    assert "cannot connect to qemu+ssh://kvm1/system" in caplog.text
    assert "root:c@" not in caplog.text


def test_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.scrub")
    scrub = ScrubFilter(redact_uri("qemu+ssh://root:hunter2@kvm1/system"))
    caplog.handler.addFilter(scrub)
    try:
        log.warning("libvirt %s said %s", "qemu+ssh://root:hunter2@kvm1/system", "no")
        try:
            raise RuntimeError("bad password hunter2")
        except RuntimeError:
            log.exception("failed")
    finally:
        caplog.handler.removeFilter(scrub)
    assert "hunter2" not in caplog.text
    assert "libvirt qemu+ssh://kvm1/system said no" in caplog.text


def test_broker_url_with_tls_and_credentials() -> None:
    ep = parse_broker_url("mqtts://agent:p%40ss%3Aword@broker.lan:8883")
    assert ep.tls is True
    assert (ep.host, ep.port) == ("broker.lan", 8883)
    assert (ep.username, ep.password) == ("agent", "p@ss:word")
    assert "p@ss" not in repr(ep)
    assert "ss%3Aword" not in repr(ep)
    assert repr(ep) == "mqtts://agent@broker.lan:8883"
    assert "p@ss" not in str(ep)


def test_broker_url_defaults() -> None:
    plain = parse_broker_url("mqtt://broker")
    assert (plain.tls, plain.host, plain.port) == (False, "broker", 1883)
    assert plain.username is None
    assert plain.password is None
    assert repr(plain) == "mqtt://broker:1883"
    assert parse_broker_url("mqtts://broker").port == 8883
    assert parse_broker_url("mqtt://user:pw@broker:1884").port == 1884


@pytest.mark.parametrize("url", ["http://broker", "broker:1883", "tcp://broker:1883", ""])
def test_broker_url_refuses_other_schemes(url: str) -> None:
    with pytest.raises(ValueError, match="mqtt://"):
        parse_broker_url(url)


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("mqtt://u:pa/ss@h:1883", "pa/ss"),
        ("mqtt://u:p#ss@h", "p#ss"),
        ("mqtt://u:p?ss@h", "p?ss"),
        ("mqtt://u:p@ss@h", "p@ss"),
        ("mqtts://u:p:ss@[::1]:8884", "p:ss"),
        ("mqtt://u:p%2Fss@h:1883", "p/ss"),
    ],
)
def test_broker_password_with_reserved_characters_parses(url: str, password: str) -> None:
    """The credentials run to the last `@`; percent-encoding (documented) also works."""
    ep = parse_broker_url(url)
    assert (ep.username, ep.password) == ("u", password)
    assert ep.host in ("h", "::1")
    assert "ss" not in repr(ep)


@pytest.mark.parametrize(
    "url",
    [
        "mqtt://u:secretpw@h:port",
        "mqtt://u:secretpw@h:99999",
        "mqtt://u:secretpw@",
        "mqtt://u:secretpw@h/path?x#y",
        "mqtt://u:secretpw@[::1",
        "mqtt://:secretpw@h",
        "mqtt://u:secret:pw@h:secretpw",
        "http://u:secretpw@h",
    ],
)
def test_broker_url_errors_never_quote_the_password(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    with pytest.raises(ValueError) as refused:
        parse_broker_url(url)
    assert "secret" not in str(refused.value)
    assert "pw" not in str(refused.value)
    monkeypatch.setenv("KVMSUP_MQTT_URL", url)
    with pytest.raises(ValidationError) as invalid:
        AgentSettings()
    assert [e["loc"] for e in invalid.value.errors()] == [("mqtt_url",)]
    assert "secret" not in " ".join(e["msg"] for e in invalid.value.errors())


def test_settings_expose_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMSUP_MQTT_URL", "mqtts://bob:pw@broker:8884")
    ep = AgentSettings().mqtt
    assert (ep.tls, ep.host, ep.port, ep.username, ep.password) == (
        True,
        "broker",
        8884,
        "bob",
        "pw",
    )


def test_public_libvirt_uri_keeps_ipv6_brackets() -> None:
    s = AgentSettings(host_id="h", libvirt_uri="qemu+ssh://root:pw@[fe80::1]:22/system")
    assert s.public_libvirt_uri() == "qemu+ssh://[fe80::1]:22/system"


def test_a_host_status_never_carries_libvirt_credentials() -> None:
    """Whoever built it: a gateway reading an older agent's status gets the redacted URI too."""
    raw = b'{"v":1,"host":"h","online":true,"libvirt_uri":"qemu+ssh://root:hunter2@kvm1/system"}'
    status = HostStatus.model_validate_json(raw)
    assert status.libvirt_uri == "qemu+ssh://kvm1/system"
    assert HostStatus(host="h", online=False).libvirt_uri is None


def test_settings_are_frozen() -> None:
    """Read once at start-up and passed down: nothing may change them under a running agent."""
    settings = AgentSettings()
    with pytest.raises(ValidationError, match="frozen") as info:
        settings.host_id = "other"  # type: ignore[misc]
    assert [e["loc"] for e in info.value.errors()] == [("host_id",)]
    with pytest.raises(ValidationError, match="frozen") as info:
        settings.mqtt_url = "mqtt://elsewhere"  # type: ignore[misc]
    assert [e["loc"] for e in info.value.errors()] == [("mqtt_url",)]
    assert settings.host_id == "kvm-node1"


def test_shared_broker_settings_keep_their_names_and_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KVMSUP_MQTT_CA", "/etc/kvmsup/ca.pem")
    monkeypatch.setenv("KVMSUP_MQTT_CERT", "/etc/kvmsup/agent.pem")
    monkeypatch.setenv("KVMSUP_MQTT_KEY", "/etc/kvmsup/agent.key")
    s = AgentSettings()
    assert (str(s.mqtt_ca), str(s.mqtt_cert), str(s.mqtt_key)) == (
        "/etc/kvmsup/ca.pem",
        "/etc/kvmsup/agent.pem",
        "/etc/kvmsup/agent.key",
    )
    assert s.offline_queue == 1000 and s.command_workers == 4 and s.log_level == "INFO"


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("KVMSUP_HOST_ID", "gateway", "host_id"),
        ("KVMSUP_MQTT_URL", "http://agent:hunter2secret@broker", "mqtt_url"),
        ("KVMSUP_MQTT_KEEPALIVE", "1", "mqtt_keepalive"),
        ("KVMSUP_HA_PREFIX", "home/+", "ha_prefix"),
        ("KVMSUP_LOG_LEVEL", "verbose", "log_level"),
    ],
)
def test_the_agent_logs_a_bad_setting_and_exits_2(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    field: str,
) -> None:
    from agent.__main__ import main

    monkeypatch.setenv(name, value)
    with caplog.at_level(logging.ERROR):
        assert main() == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].getMessage().startswith(f"bad setting {field}: ")
    assert "hunter2" not in caplog.text
    assert capsys.readouterr().err == ""  # logged, not printed


def test_the_agent_reports_every_bad_setting_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agent.__main__ import main

    monkeypatch.setenv("KVMSUP_METRICS_INTERVAL", "0")
    monkeypatch.setenv("KVMSUP_TOPIC_PREFIX", "a//b")
    with caplog.at_level(logging.ERROR):
        assert main() == 2
    logged = {r.getMessage().split(":")[0] for r in caplog.records if r.levelno == logging.ERROR}
    assert logged == {"bad setting metrics_interval", "bad setting topic_prefix"}
