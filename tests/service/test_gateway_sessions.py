"""The websocket wrapper of gateway.realtime.sessions: a frame is written whole or not at all."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from gateway.realtime.sessions import WholeSends

pytestmark = pytest.mark.service

BIG = 16 * 1024 * 1024  # far more than a socket's send buffer takes at once


def test_a_send_larger_than_the_buffer_is_written_whole_to_a_slow_reader() -> None:
    ours, theirs = socket.socketpair()
    # A socket with a timeout is non-blocking underneath, as every socket is under gevent:
    # its own `send` writes what fits and returns the count, which a websocket library ignores.
    ours.settimeout(30)
    assert ours.send(b"x" * BIG) < BIG
    received = bytearray()
    done = threading.Event()

    def slow_reader() -> None:
        time.sleep(0.5)  # the buffer is full meanwhile
        while chunk := theirs.recv(1 << 20):  # until the end of the stream
            received.extend(chunk)
        done.set()

    reader = threading.Thread(target=slow_reader, daemon=True)
    reader.start()
    try:
        whole = WholeSends(ours)
        frame = bytes(range(256)) * (BIG // 256)
        assert whole.send(frame) == BIG
        assert whole.send(frame) == BIG
        assert whole.fileno() == ours.fileno()  # everything else is the socket's own
        ours.shutdown(socket.SHUT_WR)
        assert done.wait(30)
    finally:
        ours.close()
        theirs.close()
    # Whatever the first plain send wrote, then both frames, in order and complete.
    assert received.endswith(frame + frame)
