#!/usr/bin/env python3
"""`make demo`: a private Mosquitto, agents demo-a and demo-b on the demo node files, and the
gateway on http://127.0.0.1:5000 with a fresh operator token. Ctrl-C stops all of it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "agent" / "demo"
DEV_CONF = ROOT / "broker" / "mosquitto.dev.conf"
HOSTS = ("demo-a", "demo-b")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pick_port(wanted: int) -> int:
    """`wanted`, else the next free port above it. Not one the kernel picks (bind to port 0):
    that range is also where outgoing connections get their source ports, and one could take
    the port between this check and the service's own bind."""
    for port in range(wanted, wanted + 100):
        if port_free(port):
            return port
    raise SystemExit(f"no free port in {wanted}-{wanted + 99}: stop what holds them, or retry")


def wait_port(port: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Demo:
    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="kvmsup-demo-"))
        self.procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []
        self.ok = False

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
        )
        self.procs.append((name, proc, log))

    def stop(self) -> None:
        for name, proc, log in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=8)
                except subprocess.TimeoutExpired:
                    print(f"  {name} did not stop in 8 s: killing it")
                    proc.kill()
                    proc.wait(timeout=5)
            log.close()
        self.procs.clear()
        if self.ok:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print(f"logs kept in {self.workdir}")

    def dead(self) -> str | None:
        for name, proc, _log in self.procs:
            if proc.poll() is not None:
                return name
        return None

    def tail(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def gateway_env(workdir: Path, port: int, mqtt_url: str, token: str) -> dict[str, str]:
    """The demo gateway's settings. Its database lives in the demo's own workdir: the default
    (./data/gateway.db) is the repository's, and a fresh demo would show old runs' events."""
    return {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "KVMSUP_MQTT_URL": mqtt_url,
        "KVMSUP_GATEWAY_ID": "demo",
        "KVMSUP_AUTH": "token",
        "KVMSUP_API_TOKENS": f"demo:operator:{token}",
        "KVMSUP_DB": str(workdir / "gateway.db"),
    }


def health(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as resp:
            data: dict[str, object] = json.loads(resp.read())
            return data
    except OSError:
        return None


def run(demo: Demo) -> int:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        print("mosquitto is not installed: run `make install` as root first")
        return 1
    mqtt_port = pick_port(1883)
    if mqtt_port != 1883:
        print(f"port 1883 is busy: the demo broker listens on {mqtt_port} instead")
    conf = demo.workdir / "mosquitto.conf"
    conf.write_text(
        DEV_CONF.read_text().replace("listener 1883 127.0.0.1", f"listener {mqtt_port} 127.0.0.1")
    )
    demo.spawn("mosquitto", [mosquitto, "-c", str(conf)])
    if not wait_port(mqtt_port):
        print("Mosquitto did not start:\n" + demo.tail("mosquitto"))
        return 1
    mqtt_url = f"mqtt://127.0.0.1:{mqtt_port}"

    for host in HOSTS:
        demo.spawn(
            f"agent-{host}",
            [sys.executable, "-m", "agent"],
            {
                "KVMSUP_HOST_ID": host,
                "KVMSUP_MQTT_URL": mqtt_url,
                "LIBVIRT_URI": f"test://{DEMO_DIR / f'{host}.xml'}",
            },
        )

    http_port = pick_port(5000)
    if http_port != 5000:
        print(f"port 5000 is busy: the gateway listens on {http_port} instead")
    token = secrets.token_urlsafe(24)
    demo.spawn(
        "gateway",
        [sys.executable, "-m", "gateway"],
        gateway_env(demo.workdir, http_port, mqtt_url, token),
    )
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 30
    while True:
        if (name := demo.dead()) is not None:
            print(f"{name} exited during start-up:\n{demo.tail(name)}")
            return 1
        state = health(url)
        if state and state.get("hosts_online") == len(HOSTS):
            break
        if time.monotonic() > deadline:
            print(f"the demo did not come up in 30 s; last /health: {state}")
            return 1
        time.sleep(0.2)

    auth = f'-H "Authorization: Bearer {token}"'
    print(
        f"""
KVM Supervisor demo is running (broker {mqtt_url}, hosts {", ".join(HOSTS)}).

  URL    {url}   (dashboard: {url}/ui)
  token  {token}   (role operator)

  curl {url}/health
  curl {auth} {url}/vms
  curl {auth} {url}/vm/web-01/metrics
  curl {auth} '{url}/vm/shared-vm?host=demo-b'
  curl {auth} -X POST {url}/vm/web-01/stop
  curl {auth} -X POST {url}/vm/web-01/start
  curl {auth} {url}/jobs
  curl {auth} {url}/events

Socket.IO: connect to {url} with auth {{"token": "{token}"}} (or ?token=...).
Ctrl-C stops everything.""",
        flush=True,
    )
    while True:
        time.sleep(0.5)
        if (name := demo.dead()) is not None:
            print(f"{name} exited unexpectedly:\n{demo.tail(name)}")
            return 1


def main() -> int:
    demo = Demo()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    code = 1
    try:
        code = run(demo)
    except KeyboardInterrupt:
        print("\nstopping the demo...")
        code = 0
    finally:
        demo.ok = code == 0
        demo.stop()
    print("demo stopped.")
    return code


if __name__ == "__main__":
    sys.exit(main())
