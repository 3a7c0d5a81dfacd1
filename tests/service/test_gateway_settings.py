"""The gateway's Settings: a bad setting is a settings error that never shows a secret, and the
settings are frozen and checked as the agent's are (unit); `kvmsup-gateway` with bad settings
ends with a clean error and exit 2, never a traceback or a secret (service)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from gateway.config import Settings

pytestmark = pytest.mark.service

SECRET = "hunter2-very-secret"


@pytest.mark.parametrize("dev", [False, True])
def test_a_bad_broker_url_stops_the_gateway_with_a_settings_error(dev: bool) -> None:
    env = {
        **os.environ,
        "KVMSUP_MQTT_URL": f"http://gw:{SECRET}@broker.lan:1883",
        "KVMSUP_AUTH": "none",
        "PORT": "0",
    }
    args = [sys.executable, "-m", "gateway"] + (["--dev"] if dev else [])
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "bad setting mqtt_url" in text and "mqtt://" in text, text
    assert SECRET not in text and "Traceback" not in text, text


# -- unit (no I/O): the Settings object ------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "url",
    [
        f"http://gw:{SECRET}@broker.lan:1883",
        f"mqtt://gw:{SECRET}@",
        f"broker.lan:{SECRET}",
        f"mqtt://gw:{SECRET}@broker.lan:notaport",
    ],
)
def test_a_bad_mqtt_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(mqtt_url=url)
    errors = exc.value.errors()
    assert [e["loc"] for e in errors] == [("mqtt_url",)]
    # str() is what a traceback shows; `msg` is what `kvmsup-gateway` logs.
    assert SECRET not in str(exc.value) and SECRET not in errors[0]["msg"]


@pytest.mark.unit
def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = Settings(mqtt_url=f"mqtts://gw:{SECRET}@broker.lan", api_tokens=f"a:viewer:{SECRET}")
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert Settings(mqtt_url="mqtt://127.0.0.1:1884").mqtt_url == "mqtt://127.0.0.1:1884"


@pytest.mark.unit
def test_settings_are_frozen() -> None:
    settings = Settings(mqtt_url="mqtt://127.0.0.1:1884", gateway_id="gw")
    with pytest.raises(ValidationError, match="frozen") as info:
        settings.gateway_id = "other"  # type: ignore[misc]
    assert [e["loc"] for e in info.value.errors()] == [("gateway_id",)]
    with pytest.raises(ValidationError, match="frozen") as info:
        settings.mqtt_keepalive = 30  # type: ignore[misc]
    assert [e["loc"] for e in info.value.errors()] == [("mqtt_keepalive",)]


@pytest.mark.unit
def test_the_broker_settings_are_checked_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker's settings come from the base both services share: same names, same bounds."""
    for name in ("URL", "CA", "KEEPALIVE"):
        monkeypatch.delenv(f"KVMSUP_MQTT_{name}", raising=False)
    monkeypatch.delenv("KVMSUP_TOPIC_PREFIX", raising=False)
    settings = Settings(gateway_id="gw")
    assert settings.mqtt_url == "mqtt://127.0.0.1:1883" and settings.mqtt_keepalive == 15
    assert settings.topic_prefix == "kvmsup" and settings.mqtt_ca is None
    assert repr(settings.mqtt) == "mqtt://127.0.0.1:1883"
    for bad in ({"mqtt_keepalive": 1}, {"mqtt_keepalive": 3601}, {"topic_prefix": "a//b"}):
        with pytest.raises(ValidationError) as info:
            Settings(gateway_id="gw", **bad)
        assert [e["loc"] for e in info.value.errors()] == [tuple(bad)]
