"""`create_app` only builds: the server entry point starts what runs (`gateway.start`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from gateway.current import service_of

pytestmark = pytest.mark.unit


def open_sockets() -> set[str]:
    """This process's socket descriptors, as the kernel lists them ("socket:[inode]")."""
    found: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        if target.startswith("socket:"):
            found.add(target)
    return found


def test_create_app_opens_no_socket_and_starts_no_thread(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    threads, sockets = set(threading.enumerate()), open_sockets()
    app = make_app(started=False, db=str(tmp_path / "data" / "gateway.db"))
    assert set(threading.enumerate()) == threads
    assert open_sockets() == sockets
    # Nor a file: the database (and its directory) is made when the gateway starts.
    assert list(tmp_path.iterdir()) == []
    # Built all the same: REST answers from the (empty) cache.
    resp = app.test_client().get("/vms", headers={"Authorization": "Bearer viewer-secret"})
    assert resp.status_code == 200 and resp.get_json()["count"] == 0
    assert not service_of(app).bus.connected
