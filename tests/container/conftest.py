"""The container tier: a Docker engine, the base image and the three images built once per
session as a user builds them (docker-compose build), then stacks brought up from
docker-compose.yml. Its report line gives the build time and the images' sizes."""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.containers import (
    Stack,
    build_ca_certs,
    ensure_base_image,
    image_sizes,
    start_engine,
)
from tests.support.testdriver import TestDriverDaemon

PROJECT = "kvmsupct"
# Published on a loopback address of the tier's own: 127.0.0.1:5000 and :8883 may be taken by
# other services of the machine (a demo, another test run).
BIND = "127.77.0.1"
REPORT: dict[str, str] = {}
AGENT_UID = 10001  # docker/agent.Dockerfile


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.write_line(
            "container tier: " + ", ".join(f"{k} {v}" for k, v in REPORT.items())
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker, hand the report line to the controller (tests/conftest.py)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and REPORT:
        workeroutput["container_report"] = dict(REPORT)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        pytest.fail("docker / docker-compose missing: run `make install` as root")
    if os.geteuid() != 0 and subprocess.run(["docker", "info"], capture_output=True).returncode:
        pytest.skip("no Docker engine answers, and only root can start one")
    proc = start_engine(tmp_path_factory.mktemp("dockerd") / "dockerd.log")
    yield
    if proc is not None:  # ours: stopped, with every container it ran
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="session")
def images(engine: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`docker-compose build` of the three Dockerfiles, with this machine's extra CAs for pip
    (KVMSUP_BUILD_CA_CERTS, docker/README.md); none when it has none."""
    work = tmp_path_factory.mktemp("images")
    REPORT["base"] = ensure_base_image(work)
    started = time.monotonic()
    Stack(PROJECT, work, {"KVMSUP_BUILD_CA_CERTS": build_ca_certs()}).compose("build", timeout=1800)
    REPORT["build"] = f"{time.monotonic() - started:.0f} s"
    sizes = image_sizes(PROJECT)
    REPORT["images"] = " ".join(f"{k}={v / 1e6:.0f}MB" for k, v in sizes.items())


def libvirt_group() -> grp.struct_group:
    """The host group the test's libvirtd gives its socket to: `libvirt` where it exists."""
    for name in ("libvirt", "kvm"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    pytest.skip("no libvirt or kvm group on this machine")


def ensure_host_agent_user(group: str) -> None:
    """docker/README.md's host user for the agent image's uid: libvirtd looks the connecting
    uid up in the host's user database and refuses a uid it cannot find. Added once, as the
    README tells an operator; never removed (a later run, or the operator, relies on it)."""
    try:
        pwd.getpwuid(AGENT_UID)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--uid", str(AGENT_UID), "--no-create-home",
             "--shell", "/usr/sbin/nologin", "-G", group, "kvmsup-agent"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip


@pytest.fixture(scope="module")
def host_libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestDriverDaemon]:
    """The host's libvirtd, as the agent's container meets it: a socket writable by one group.
    libvirt's test driver behind it, so no VM really runs."""
    group = libvirt_group().gr_name
    ensure_host_agent_user(group)
    daemon = TestDriverDaemon(tmp_path_factory.mktemp("libvirtd"), group)
    daemon.start()
    yield daemon
    daemon.stop()


def agent_override(work: Path, daemon: TestDriverDaemon) -> Path:
    """The one change to docker-compose.yml: the agent's mounted socket is the test's libvirtd,
    at the path the image dials, and its URI names libvirtd's shared test driver (one VM,
    `test`, running; what the test defines there, the agent sees)."""
    uri = "test+unix:///default?socket=/var/run/libvirt/libvirt-sock"
    path = work / "compose.test.yml"
    path.write_text(
        "services:\n  agent:\n    environment:\n"
        f'      LIBVIRT_URI: "{uri}"\n      KVMSUP_METRICS_INTERVAL: "1"\n'
        f'    volumes:\n      - "{daemon.socket}:/var/run/libvirt/libvirt-sock"\n'
    )
    return path


def base_env(work: Path) -> dict[str, str]:
    """Settings every stack of the tier shares: its own published addresses and host dirs."""
    for name in ("broker-secrets", "mqtt-ca"):
        (work / name).mkdir(exist_ok=True)
        (work / name).chmod(0o755)
    return {
        "KVMSUP_HOST_ID": "ct-host",
        "KVMSUP_LIBVIRT_GID": str(libvirt_group().gr_gid),
        "KVMSUP_API_TOKENS": f"me:operator:{secrets.token_hex(16)}",
        "KVMSUP_GATEWAY_BIND": BIND,
        "KVMSUP_BROKER_BIND": BIND,
        "KVMSUP_BROKER_SECRETS": str(work / "broker-secrets"),
        "KVMSUP_MQTT_CA_DIR": str(work / "mqtt-ca"),
    }


@pytest.fixture(scope="module")
def dev_stack(
    images: None, host_libvirtd: TestDriverDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """docker/README.md's development mode: anonymous broker on the compose network."""
    work = tmp_path_factory.mktemp("dev")
    env = base_env(work) | {
        "KVMSUP_BROKER_MODE": "dev",
        "KVMSUP_GATEWAY_MQTT_URL": "mqtt://broker:1883",
        "KVMSUP_AGENT_MQTT_URL": "mqtt://broker:1883",
    }
    stack = Stack(PROJECT, work, env, [agent_override(work, host_libvirtd)])
    stack.down()
    stack.compose("up", "-d")
    yield stack
    stack.down()
