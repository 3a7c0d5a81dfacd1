"""Start the project's services as real processes (`python -m agent`, `python -m gateway`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / "agent" / "demo"


class Service:
    """A child process with its log in a file; stopped (or kill -9'd) by the test that owns it."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = log
        # `python -m` imports from here first: another tree runs another release's code.
        self.cwd = ROOT
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        if not self.alive():
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def terminate(self) -> None:
        """Send SIGTERM without waiting: `stop_all` stops several processes at once."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, limit: int = 30000) -> str:
        """The end of the log, as a failed test prints it (the whole log when it is short)."""
        out = self.output()
        if len(out) <= limit:
            return out
        return f"[... {len(out) - limit} characters cut ...]\n{out[-limit:]}"

    def wait_log(self, needle: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                return
            time.sleep(0.05)
        tail = self.output()[-2000:]
        raise AssertionError(f"{self.name}: {needle!r} not logged; log tail:\n{tail}")


def stop_all(services: list[Service], timeout: float = 10.0) -> None:
    """Stop every service as `Service.stop` does, all at once: each shuts down on its own."""
    for svc in services:
        svc.terminate()
    for svc in services:
        svc.stop(timeout)


def agent_service(
    tmp: Path, host_id: str, broker_url: str, libvirt_uri: str, **extra: str
) -> Service:
    env = {
        "KVMSUP_HOST_ID": host_id,
        "KVMSUP_MQTT_URL": broker_url,
        "LIBVIRT_URI": libvirt_uri,
        "KVMSUP_METRICS_INTERVAL": "0.5",
        "KVMSUP_MQTT_KEEPALIVE": "5",
        **extra,
    }
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in host_id)
    log = tmp / f"agent-{safe}.log"
    return Service(f"agent-{host_id}", [sys.executable, "-m", "agent"], env, log)


def demo_node_uri(name: str) -> str:
    """`test:///` URI of a demo node file (agent/demo/<name>.xml)."""
    return f"test://{DEMO_DIR / f'{name}.xml'}"
