"""The gateway's Settings: a bad broker URL is a settings error that never shows a secret."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.config import Settings

pytestmark = pytest.mark.unit

SECRET = "hunter2-very-secret"


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


def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = Settings(mqtt_url=f"mqtts://gw:{SECRET}@broker.lan", api_tokens=f"a:viewer:{SECRET}")
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert Settings(mqtt_url="mqtt://127.0.0.1:1884").mqtt_url == "mqtt://127.0.0.1:1884"
