"""docker-compose.yml is consistent with the repository: contexts, Dockerfiles, files, commands."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def dockerfile(service: dict[str, Any]) -> Path:
    build = service["build"]
    return ROOT / build["context"] / build.get("dockerfile", "Dockerfile")


def test_services_build_from_existing_files(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"broker", "gateway", "agent"}
    for name, service in compose["services"].items():
        assert (ROOT / service["build"]["context"]).is_dir(), name
        path = dockerfile(service)
        assert path.is_file(), path
        for line in path.read_text().splitlines():
            if line.startswith("COPY "):
                for src in line.split()[1:-1]:
                    assert (ROOT / service["build"]["context"] / src).exists(), (name, src)


def test_broker_is_the_official_mosquitto_2_image_with_our_config(compose: dict[str, Any]) -> None:
    text = dockerfile(compose["services"]["broker"]).read_text()
    assert re.search(r"^FROM eclipse-mosquitto:2\b", text, re.M)
    assert "COPY broker/" in text


def test_commands_are_the_console_scripts(compose: dict[str, Any]) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in ("gateway", "agent"):
        service = compose["services"][name]
        command = service["command"][0]
        assert command == f"kvmsup-{name}" and command in scripts
        assert f'CMD ["{command}"]' in dockerfile(service).read_text()


def test_volumes_are_named_or_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                # The libvirt socket exists only on a KVM host; everything else must be here.
                if "libvirt" not in source:
                    assert (ROOT / source).exists(), source
            else:
                assert source in named, source


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_accepts_the_file() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
