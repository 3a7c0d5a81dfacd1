"""A hand-driven Socket.IO client: raw engine.io websocket frames, as an attacker sends them."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import websocket

OPEN_TIMEOUT = 10.0


class Refused(Exception):
    """The websocket handshake was answered with an HTTP error status."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(f"handshake refused with {status}")
        self.status = status
        self.headers = headers


class RawSio:
    """`ws://…/socket.io/?EIO=4&transport=websocket`, optionally from another loopback
    address (`source`, e.g. 127.0.0.2) so per-address limits can be exercised on one machine."""

    def __init__(self, port: int, *, source: str | None = None, query: str = "") -> None:
        url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket{query}"
        sock = socket.create_connection(
            ("127.0.0.1", port), timeout=OPEN_TIMEOUT, source_address=(source or "127.0.0.1", 0)
        )
        try:
            self.ws = websocket.create_connection(url, socket=sock, timeout=OPEN_TIMEOUT)
        except websocket.WebSocketBadStatusException as exc:
            sock.close()
            raise Refused(exc.status_code, dict(exc.resp_headers or {})) from exc
        except BaseException:
            sock.close()
            raise
        first = self.ws.recv()
        assert isinstance(first, str) and first.startswith("0"), first
        self.open = json.loads(first[1:])
        self.received: list[str] = []
        self.closed = False

    def send(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            self.ws.send_binary(frame)
        else:
            self.ws.send(frame)

    def connect(self, auth: Any = None, *, raw: str | None = None) -> str:
        """Send a Socket.IO CONNECT (`40` + JSON auth) and return the answer frame."""
        self.send(raw if raw is not None else "40" + ("" if auth is None else json.dumps(auth)))
        answer = self.next(lambda f: f.startswith("4"), timeout=10)
        assert answer is not None, "no answer to CONNECT"
        return answer

    def _read(self, timeout: float) -> str | None:
        """One frame, answering engine.io pings; None on timeout; sets `closed` at the end."""
        self.ws.settimeout(timeout)
        try:
            opcode, data = self.ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketException, OSError):
            self.closed = True
            return None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.closed = True
            return None
        if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
            return ""
        frame = data.decode(errors="replace")
        if frame == "2":
            self.ws.send("3")
        self.received.append(frame)
        return frame

    def next(self, match: Any = lambda f: True, timeout: float = 10.0) -> str | None:
        """The next received frame `match` accepts, within `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.closed and (left := deadline - time.monotonic()) > 0:
            frame = self._read(min(left, 1.0))
            if frame and match(frame):
                return frame
        return None

    def wait_closed(self, timeout: float) -> bool:
        """True once the server has ended the connection (engine.io CLOSE, close frame, EOF)."""
        deadline = time.monotonic() + timeout
        while not self.closed and (left := deadline - time.monotonic()) > 0:
            if self._read(min(left, 1.0)) == "1":  # engine.io CLOSE
                self.closed = True
        return self.closed

    def events(self, name: str) -> list[Any]:
        """Payloads of the `42["name", …]` frames received so far."""
        found = []
        for frame in self.received:
            if frame.startswith("42"):
                body = json.loads(frame[2:])
                if body and body[0] == name:
                    found.append(body[1] if len(body) > 1 else None)
        return found

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            self.ws.shutdown()


def connect_error(frame: str) -> dict[str, Any]:
    """The payload of a CONNECT_ERROR frame `44{…}`."""
    assert frame.startswith("44"), frame
    body: dict[str, Any] = json.loads(frame[2:])
    return body
