"""The unit tier's guard: a test marked `unit` does no I/O, wherever its file lives.

Every test marked `unit` runs under the `no_io` fixture (tests/conftest.py), which fails the
test, naming what it did, when it:

- connects or binds a socket of the network or of a Unix path (AF_INET, AF_INET6, AF_UNIX),
  or makes a socket pair;
- starts a thread (`threading.Thread.start`, so a Timer or an executor's worker as well, or a
  bare `_thread.start_new_thread`);
- spawns a process (`subprocess.Popen` and everything built on it, `os.system`, `os.fork`,
  `os.posix_spawn`);
- opens an SQLite database on a file (`sqlite3.connect` of anything but ":memory:" or a
  URI in memory mode).

It holds under gevent's monkey-patching too (both socket classes are guarded, and the patched
`threading.Thread` still goes through `start`). Not counted: greenlets (no thread), and
gevent's pool of native threads, which the gateway only uses for SQLite calls, themselves
refused on a file.

Such a test belongs in the `service` tier. Allowed, because they stay in the process and open
no socket: Flask's `app.test_client()` (a WSGI call) and Flask-SocketIO's
`socketio.test_client()` (its packets go straight to the server object). An app made by
`make_app(started=False)` is built only: `start` would connect to MQTT and start threads, so a
test that starts one is a service test. Creating plain files under `tmp_path` is not counted:
the tier's concern is sockets, threads, processes and databases, which make tests slow and
flaky under load.
"""

from __future__ import annotations

import _thread
import os
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

GUARDED_FAMILIES = {socket.AF_INET, socket.AF_INET6, socket.AF_UNIX}


class UnitIO:
    """What a unit test tried. The first attempt fails the test where it happens (pytest's
    `Failed` is no `Exception`, so a product's `except Exception` does not hide it), and the
    fixture fails it at teardown in case something caught it all the same (a thread's
    handler, a callback's guard)."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.seen: list[str] = []

    def refuse(self, what: str) -> None:
        message = (
            f"unit test {self.test} did I/O: {what}. The unit tier does no I/O (no sockets, "
            "threads, subprocesses or SQLite files): make the test I/O-free or mark it "
            "`service`."
        )
        self.seen.append(message)
        pytest.fail(message, pytrace=True)


def _patch_socket(mp: pytest.MonkeyPatch, io: UnitIO) -> None:
    classes = {socket.socket}
    try:  # under gevent's patching, socket.socket is gevent's class: guard both
        from gevent import monkey

        classes.add(monkey.get_original("socket", "socket"))
    except ImportError:
        pass
    for cls in classes:
        for name in ("connect", "connect_ex", "bind"):
            original = getattr(cls, name)

            def guarded(
                sock: socket.socket, address: Any, *, _name: str = name, _orig: Any = original
            ) -> Any:
                if sock.family in GUARDED_FAMILIES:
                    io.refuse(f"socket {_name}({address!r}) on {sock.family.name}")
                return _orig(sock, address)

            mp.setattr(cls, name, guarded)

    def socketpair(*args: Any, **kwargs: Any) -> Any:
        io.refuse("socket.socketpair()")

    mp.setattr(socket, "socketpair", socketpair)


def _patch_threads(mp: pytest.MonkeyPatch, io: UnitIO) -> None:
    def thread_start(thread: threading.Thread) -> None:
        io.refuse(f"started thread {thread.name!r} ({type(thread).__name__})")

    mp.setattr(threading.Thread, "start", thread_start)

    def start_new_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        io.refuse(f"started a thread running {getattr(fn, '__qualname__', fn)!r}")

    mp.setattr(_thread, "start_new_thread", start_new_thread)


def _patch_processes(mp: pytest.MonkeyPatch, io: UnitIO) -> None:
    def popen_init(popen: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        io.refuse(f"spawned a subprocess {args!r}")

    mp.setattr(subprocess.Popen, "__init__", popen_init)
    for name in ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):

            def refuse(*args: Any, _name: str = name, **kwargs: Any) -> Any:
                io.refuse(f"os.{_name}{args!r}")

            mp.setattr(os, name, refuse)


def in_memory(database: Any, uri: bool) -> bool:
    """An SQLite database that lives in memory: ":memory:", or a URI in memory mode."""
    name = os.fsdecode(database) if isinstance(database, str | bytes | os.PathLike) else ""
    if name == ":memory:":
        return True
    return uri and (name.startswith("file::memory:") or "mode=memory" in name)


def _patch_sqlite(mp: pytest.MonkeyPatch, io: UnitIO) -> None:
    original = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if not in_memory(database, bool(kwargs.get("uri", False))):
            io.refuse(f"sqlite3.connect({database!r}) opens a database file")
        conn: sqlite3.Connection = original(database, *args, **kwargs)
        return conn

    mp.setattr(sqlite3, "connect", connect)


@contextmanager
def guarded(test: str) -> Iterator[UnitIO]:
    """Refuses I/O (see the module's docstring) until the block ends; yields what was tried."""
    io = UnitIO(test)
    with pytest.MonkeyPatch.context() as mp:
        _patch_socket(mp, io)
        _patch_threads(mp, io)
        _patch_processes(mp, io)
        _patch_sqlite(mp, io)
        yield io
