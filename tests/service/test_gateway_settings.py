"""`kvmsup-gateway` with bad settings: a clean error and exit 2, never a traceback or a secret."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
