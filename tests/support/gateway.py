"""The gateway as a real process on a free port, and small HTTP / Socket.IO helpers for tests."""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import socketio

from tests.support.ports import free_port, wait_port
from tests.support.procs import Service


@dataclass
class Tokens:
    viewer: str = field(default_factory=lambda: "v-" + secrets.token_hex(12))
    operator: str = field(default_factory=lambda: "o-" + secrets.token_hex(12))

    def env(self) -> str:
        return f"alice:viewer:{self.viewer},bob:operator:{self.operator}"


class GatewayProc:
    """`python -m gateway` with its own port, broker URL and tokens."""

    def __init__(
        self,
        tmp: Path,
        broker_url: str,
        *,
        tokens: Tokens | None = None,
        gateway_id: str = "gw-test",
        dev: bool = False,
        **extra: str,
    ) -> None:
        self.port = free_port()
        self.tokens = tokens or Tokens()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "KVMSUP_MQTT_URL": broker_url,
            "KVMSUP_GATEWAY_ID": gateway_id,
            "KVMSUP_API_TOKENS": self.tokens.env(),
            "KVMSUP_MQTT_KEEPALIVE": "5",
            "KVMSUP_ACCEPT_TIMEOUT": "3",
            # Per gateway id, so a restarted gateway (same id) finds its history and audit.
            "KVMSUP_DB": str(tmp / f"{gateway_id}.db"),
            **extra,
        }
        args = [sys.executable, "-m", "gateway"] + (["--dev"] if dev else [])
        self.service = Service(f"gateway-{gateway_id}", args, env, tmp / f"{gateway_id}.log")
        self._local = threading.local()

    def start(self) -> GatewayProc:
        self.service.start()
        wait_port(self.port, timeout=15)
        return self

    def stop(self) -> None:
        # Our idle keep-alive connection would hold gunicorn's graceful stop for its whole
        # timeout: the worker waits for every open connection to end.
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None
        self.service.stop()

    def headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def http(self) -> requests.Session:
        """A keep-alive session per thread, as an app's HTTP client keeps its connection."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def get(self, path: str, token: str | None = "viewer", **kw: Any) -> requests.Response:
        headers = {**self.headers(self._tok(token)), **kw.pop("headers", {})}
        return self.http.get(self.url + path, headers=headers, timeout=15, **kw)

    def post(self, path: str, token: str | None = "operator", **kw: Any) -> requests.Response:
        headers = {**self.headers(self._tok(token)), **kw.pop("headers", {})}
        return self.http.post(self.url + path, headers=headers, timeout=30, **kw)

    def _tok(self, token: str | None) -> str | None:
        if token == "viewer":
            return self.tokens.viewer
        if token == "operator":
            return self.tokens.operator
        return token

    def sio(self, token: str | None = "viewer", **kw: Any) -> SioClient:
        return SioClient(self.url, self._tok(token), **kw)


class SioClient:
    """A real python-socketio client over the websocket transport that records every event."""

    def __init__(self, url: str, token: str | None, *, query_token: bool = False) -> None:
        self.events: list[tuple[str, Any]] = []
        self.client = socketio.Client(reconnection=False)
        self.client.on("*", self._record)
        target = url + (f"?token={token}" if query_token and token else "")
        auth = {"token": token} if token and not query_token else None
        self.client.connect(target, transports=["websocket"], auth=auth, wait_timeout=10)

    def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))

    def of(self, event: str) -> list[Any]:
        return [d for e, d in list(self.events) if e == event]

    def wait_for(
        self, event: str, predicate: Callable[[Any], bool] = lambda d: True, timeout: float = 10.0
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for data in self.of(event):
                if predicate(data):
                    return data
            time.sleep(0.02)
        raise AssertionError(
            f"no {event!r} matching within {timeout}s; got {[e for e, _ in self.events][-20:]}"
        )

    def call(self, event: str, data: Any = None, timeout: float = 30.0) -> Any:
        return self.client.call(event, data, timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()


def wait_until(check: Callable[[], Any], timeout: float = 10.0, every: float = 0.05) -> Any:
    """Poll until `check()` returns something truthy; return it, or fail with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (requests.RequestException, AssertionError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s; last: {last!r}")


# -- the seed's value types (seed-README examples) -------------------------------------------
# A Dart model reading the seed casts each field (`as int`, `as double`, `as bool`): a 2048.0
# where the seed sent 2048 throws. `type(x) is int` also keeps bools out of the int fields.


def _is(value: Any, *types: type | None) -> bool:
    return any(value is None if t is None else type(value) is t for t in types)


def check_seed_vm(vm: dict[str, Any]) -> None:
    """One entry of `GET /vms` / `vms_list` (and the start of `GET /vm/<name>`)."""
    expected = {"name": (str,), "state": (str,), "vcpus": (int,), "memory_mb": (int,)}
    expected |= {"is_active": (bool,), "host": (str,), "uuid": (str,)}
    for key, types in expected.items():
        assert key in vm and _is(vm[key], *types), (key, vm.get(key), vm)


def check_seed_metrics(m: dict[str, Any]) -> None:
    """`GET /vm/<name>/metrics` / `vm_metrics` / an `all_metrics` item."""
    expected: dict[str, tuple[type | None, ...]] = {
        "name": (str,),
        "state": (str,),
        "cpu_percent": (float, None),
        "vcpus": (int,),
        "memory_percent": (float, None),
        "memory_used_mb": (int, None),
        "memory_total_mb": (int, None),
        "disk_io": (list,),
        "network_io": (list,),
        "host": (str,),
        "uuid": (str,),
    }
    for key, types in expected.items():
        assert key in m and _is(m[key], *types), (key, m.get(key), m)
    for disk in m["disk_io"]:
        assert type(disk) is dict and type(disk["device"]) is str, disk
        assert type(disk["read_bytes"]) is int and type(disk["write_bytes"]) is int, disk
    for nic in m["network_io"]:
        assert type(nic) is dict and type(nic["interface"]) is str, nic
        assert type(nic["rx_bytes"]) is int and type(nic["tx_bytes"]) is int, nic
