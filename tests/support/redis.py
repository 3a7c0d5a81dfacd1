"""A real `redis-server` process on a private loopback port, for the Socket.IO message queue."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import redis

from tests.support.ports import free_port, wait_port


def redis_binary() -> str:
    # Like Mosquitto, Redis is one of the project's apt packages: a missing binary is a
    # missing install step and fails the test, it is never skipped (CI would stay green).
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise RuntimeError("redis-server is not installed: run `make install` (as root)")
    return found


class RedisServer:
    """No persistence, no config file of the machine's: only what the test gives it, and a
    password, as docs/SCALING.md asks of a production one."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.log = workdir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.password = secrets.token_hex(12)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            self.password,
            "--dir",
            str(self.workdir),
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        return self

    def subscribers(self, channel: str) -> int:
        """Clients subscribed to `channel` now (0 while the server is down)."""
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=2
        )
        try:
            return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))
        except redis.RedisError:
            return 0
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
