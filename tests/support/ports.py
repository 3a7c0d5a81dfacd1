"""Free loopback TCP ports for the processes a test starts."""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

# Below the kernel's range of source ports for outgoing connections (Linux: 32768 and up).
LOWEST = 20000
_given: set[int] = set()
_pick = random.SystemRandom()  # not the `random` a test may have seeded


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_range(low: int, high: int) -> tuple[int, int]:
    """This pytest-xdist worker's own slice of [low, high): each worker remembers only the
    ports it gave, so two workers picking from one range could hand out the same free port
    before either service binds it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count <= 1:
        return low, high
    index = int(worker[2:]) % count
    span = (high - low) // count
    return low + index * span, low + (index + 1) * span


def free_port() -> int:
    """A loopback port free now, for a process the test starts to listen on. Not one the
    kernel picks (bind to port 0): that comes from the range it also gives outgoing
    connections as their source port, and one may take it between this release and the
    service's bind (seen: a gateway that found its port in use). Below that range only an
    explicit bind takes a port, and this process never hands out the same one twice."""
    top = _ephemeral_start()
    low, high = _worker_range(LOWEST, max(top, LOWEST + 1000))
    for _ in range(1000):
        port = _pick.randrange(low, high)
        if port in _given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {low}-{high}")


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")
