"""A real Mosquitto process on a private loopback port, built from broker/mosquitto.dev.conf."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

from tests.support.ports import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
DEV_CONF = ROOT / "broker" / "mosquitto.dev.conf"


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        raise RuntimeError("mosquitto is not installed: run `make install` (as root)")
    return found


class Broker:
    """Start, kill -9 and restart (same port) a Mosquitto; the config is the dev one."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        text = DEV_CONF.read_text().replace(
            "listener 1883 127.0.0.1", f"listener {self.port} 127.0.0.1"
        )
        self.conf.write_text(text)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
