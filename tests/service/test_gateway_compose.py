"""docker-compose.yml is consistent with the repository (contexts, Dockerfiles, files, commands)
and secure by default: a broker that needs its passwords and ACL, unprivileged read-only
containers, images without build tools. No Docker engine here: the files are read, and
`docker-compose config` resolves them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.service

ROOT = Path(__file__).resolve().parents[2]


def docker_compose() -> str:
    """The docker-compose binary. `make install` installs it (APT_LEAN), so a missing one is a
    missing install step: the test fails saying so, never skips (CI would stay green)."""
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail("docker-compose is not installed: run `make install` (as root)")
    return found


def test_docker_compose_accepts_the_file() -> None:
    out = subprocess.run(
        [docker_compose(), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


# -- secure by default --------------------------------------------------------------------------

ENTRYPOINT = ROOT / "docker" / "broker-entrypoint.sh"
EXAMPLE_ENV = ROOT / "docker" / "compose.env.example"


def run_entrypoint(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # An empty PATH: the script can find no mosquitto to start, so nothing listens anywhere;
    # what it decided shows in its exit status and its log.
    return subprocess.run(
        ["/bin/sh", str(ENTRYPOINT)],
        env={"PATH": "/nonexistent", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.skipif(
    Path("/mosquitto").exists(),
    reason="the entrypoint reads its secrets from /mosquitto/secrets, and this machine has a "
    "/mosquitto: the test could not know what the script finds there",
)
def test_broker_refuses_to_start_without_its_secrets() -> None:
    out = run_entrypoint({})
    assert out.returncode == 78, out.stderr
    assert "REFUSING TO START" in out.stderr
    assert "passwd acl ca.crt server.crt server.key" in out.stderr
    assert "KVMSUP_BROKER_MODE=dev" in out.stderr  # the way out is named
    assert "not found" not in out.stderr  # it never tried to start Mosquitto


def test_broker_open_mode_must_be_asked_for_by_name_and_is_announced() -> None:
    out = run_entrypoint({"KVMSUP_BROKER_MODE": "dev"})
    warning, started, _ = out.stderr.partition("mosquitto: not found")
    assert started, out.stderr  # after the warning it went on to start Mosquitto
    assert warning.count("WARNING:") >= 3
    for words in ("ANONYMOUS", "NO ACL", "NO TLS"):
        assert words in warning
    assert "exec mosquitto -c /mosquitto/config/mosquitto.conf" in ENTRYPOINT.read_text()
    # A near miss is refused, not taken for either mode.
    for other in ("DEV", "open", "development"):
        refused = run_entrypoint({"KVMSUP_BROKER_MODE": other})
        assert refused.returncode == 64, other
        assert "WARNING" not in refused.stderr and "not found" not in refused.stderr


def compose_config(**env: str) -> dict[str, Any]:
    """`docker-compose config` with the example settings file and `env` on top, nothing else
    from this machine's environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KVMSUP_", "COMPOSE_"))}
    files = ["-f", str(ROOT / "docker-compose.yml"), "--env-file", str(EXAMPLE_ENV)]
    out = subprocess.run(
        [docker_compose(), *files, "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    services: dict[str, Any] = yaml.safe_load(out.stdout)["services"]
    return services


def test_compose_resolves_the_example_settings_to_a_production_stack() -> None:
    services = compose_config()
    assert services["broker"]["environment"]["KVMSUP_BROKER_MODE"] == "production"
    assert services["gateway"]["ports"] == ["127.0.0.1:5000:5000/tcp"]
    assert services["gateway"]["environment"]["KVMSUP_MQTT_URL"].startswith("mqtts://gateway-1:")
    assert services["agent"]["environment"]["KVMSUP_MQTT_URL"].startswith("mqtts://kvm1:")
    assert services["agent"]["group_add"] == ["998"]
    for service in services.values():
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]

    dev = compose_config(KVMSUP_BROKER_MODE="dev")
    assert dev["broker"]["environment"]["KVMSUP_BROKER_MODE"] == "dev"
