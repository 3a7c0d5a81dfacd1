"""The package as a user installs it: `python -m build` gives a versioned wheel and sdist, and
`pip install 'kvmsup[agent]'` (or `[gateway]`) from that wheel, into a fresh virtualenv with
nothing of the project's own, gives services that run: the agent against a real Mosquitto and
libvirt's test driver until its retained online status appears, the gateway until `/health`
answers. Built once per session (tests/package/conftest.py); pip reaches PyPI."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
import requests

from agent import __version__
from tests.support.broker import Broker
from tests.support.mqtt import Recorder
from tests.support.package import install, run
from tests.support.ports import free_port, wait_port
from tests.support.procs import DEMO_DIR, Service
from tests.support.testdriver import TestDriverDaemon

pytestmark = [pytest.mark.package, pytest.mark.timeout(900)]


def test_build_gives_a_wheel_and_an_sdist_with_the_agents_version(dist: Path) -> None:
    names = sorted(p.name for p in dist.iterdir())
    assert names == [f"kvmsup-{__version__}-py3-none-any.whl", f"kvmsup-{__version__}.tar.gz"]
    with zipfile.ZipFile(dist / names[0]) as wheel:
        meta = wheel.read(f"kvmsup-{__version__}.dist-info/METADATA").decode()
        scripts = wheel.read(f"kvmsup-{__version__}.dist-info/entry_points.txt").decode()
        files = wheel.namelist()
    assert re.search(r"^Name: kvmsup$", meta, re.M)
    # gunicorn's gevent worker imports `packaging`, which gunicorn needs only with this extra.
    assert re.search(r'^Requires-Dist: gunicorn\[gevent\].*extra == "gateway"', meta, re.M)
    assert "kvmsup-agent = agent.__main__:cli" in scripts
    assert "kvmsup-gateway = gateway.__main__:main" in scripts
    assert "gateway/ui/index.html" in files  # the dashboard ships with it
    assert "agent/demo/demo-a.xml" in files
    assert not [f for f in files if f.startswith("tests/")]


@pytest.fixture
def agent_bin(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install(dist, tmp_path_factory.mktemp("venv-agent"), "agent")


def test_the_installed_agent_runs_against_libvirt_and_mosquitto(
    agent_bin: Path, broker: Broker, testdriver: TestDriverDaemon, tmp_path: Path
) -> None:
    assert run([agent_bin / "kvmsup-agent", "--version"], tmp_path) == (
        f"kvmsup-agent {__version__}\n"
    )
    recorder = Recorder(broker.port)
    recorder.subscribe("kvmsup/v1/+/status")
    env = {
        "KVMSUP_HOST_ID": "pkg-host",
        "KVMSUP_MQTT_URL": broker.url,
        "LIBVIRT_URI": testdriver.uri(DEMO_DIR / "demo-a.xml"),
        "KVMSUP_MQTT_KEEPALIVE": "5",
        "PYTHONPATH": "",
    }
    agent = Service("agent-pkg", [str(agent_bin / "kvmsup-agent")], env, tmp_path / "agent.log")
    agent.start()
    try:
        status = recorder.wait_for(
            lambda m: (
                m.topic == "kvmsup/v1/pkg-host/status" and m.json().get("libvirt_connected") is True
            ),
            timeout=30,
        )[0]
        body = status.json()
        assert body["online"] is True and body["agent_version"] == __version__
        # Retained: a client that comes later sees it too.
        late = Recorder(broker.port)
        late.subscribe("kvmsup/v1/pkg-host/status")
        kept = late.wait_for(lambda m: m.topic == "kvmsup/v1/pkg-host/status", timeout=5)[0]
        assert kept.retain and json.loads(kept.payload)["online"] is True
        late.close()
    finally:
        agent.stop()
        recorder.close()
    assert "Traceback" not in agent.output(), agent.tail()


@pytest.fixture
def gateway_bin(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install(dist, tmp_path_factory.mktemp("venv-gateway"), "gateway")


def test_the_installed_gateway_serves_with_its_gevent_worker(
    gateway_bin: Path, broker: Broker, tmp_path: Path
) -> None:
    """gunicorn and its gevent worker from the wheel's own dependencies: nothing the project's
    venv happens to carry (test tools) can hide a missing one."""
    assert run([gateway_bin / "kvmsup-gateway", "--version"], tmp_path) == (
        f"kvmsup-gateway {__version__}\n"
    )
    port = free_port()
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "KVMSUP_MQTT_URL": broker.url,
        "KVMSUP_API_TOKENS": "me:viewer:pkg-test-token-0123456789",
        "KVMSUP_DB": str(tmp_path / "gateway.db"),
        "PYTHONPATH": "",
    }
    gateway = Service(
        "gateway-pkg", [str(gateway_bin / "kvmsup-gateway")], env, tmp_path / "gw.log"
    )
    gateway.start()
    try:
        wait_port(port, timeout=30)
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert health.status_code == 200, health.text
        index = requests.get(
            f"http://127.0.0.1:{port}/",
            headers={"Authorization": "Bearer pkg-test-token-0123456789"},
            timeout=10,
        )
        assert index.json()["version"] == __version__
        assert gateway.alive(), gateway.tail()
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.output(), gateway.tail()
