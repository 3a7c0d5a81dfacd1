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


def writable_dirs(text: str) -> tuple[str | None, set[str]]:
    """The user a Dockerfile ends with (`USER`), and the directories its `RUN` lines create
    (`mkdir`) and hand to that user (`chown`) before the `USER` line."""
    logical = re.sub(r"\\\n", " ", text)  # join continuation lines
    user: str | None = None
    created: set[str] = set()
    owned: dict[str, set[str]] = {}
    for line in logical.splitlines():
        words = line.split()
        if words and words[0] == "USER":
            user = words[1].split(":")[0]
        elif words and words[0] == "RUN" and user is None:
            for command in re.split(r"&&|;", line[len("RUN") :]):
                args = [a for a in command.split() if not a.startswith("-")]
                paths = {a.rstrip("/") for a in args[1:] if a.startswith("/")}
                if args and args[0] == "mkdir":
                    created |= paths
                elif args and args[0] == "chown" and len(args) > 1:
                    owned.setdefault(args[1].split(":")[0], set()).update(paths)
    return user, created & owned.get(user or "", set())


def test_writable_dirs_helper_reads_mkdir_and_chown() -> None:
    text = (
        "FROM x\nRUN useradd u \\\n    && mkdir -p /data /cache \\\n"
        "    && chown u:u /data\nUSER u\nRUN mkdir /late && chown u /late\n"
    )
    assert writable_dirs(text) == ("u", {"/data"})
    assert writable_dirs("FROM x\nRUN mkdir /data\n") == (None, set())


def test_named_volumes_of_non_root_images_are_created_and_owned_by_their_user(
    compose: dict[str, Any],
) -> None:
    """Docker fills a new named volume from the image's directory, owner included; without that
    directory the volume mounts root-owned and a `USER` image cannot write to it (a gateway
    whose KVMSUP_DB is there refuses to start). No Docker engine here: read the Dockerfile."""
    named = set(compose.get("volumes") or {})
    checked = 0
    for name, service in compose["services"].items():
        user, ready = writable_dirs(dockerfile(service).read_text())
        if user in (None, "root", "0"):
            continue
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source in named:
                checked += 1
                assert target.rstrip("/") in ready, (name, target, user)
    assert checked  # the gateway's data volume is among them
