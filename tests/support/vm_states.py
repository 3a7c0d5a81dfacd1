"""A VM's `VmState` as an agent publishes it, for the gateway and Home Assistant tests: a
running, booted VM with 2 vCPUs and 1 GiB unless a test says otherwise (`**fields`)."""

from __future__ import annotations

from typing import Any

from shared.messages import VmState


def vm_state(host: str, uuid: str, name: str = "web", **fields: Any) -> VmState:
    values: dict[str, Any] = {
        "state": "running",
        "reason": "booted",
        "is_active": True,
        "vcpus": 2,
        "memory_mb": 1024,
        "max_memory_mb": 1024,
        "autostart": False,
        "persistent": True,
        "seq": 1,
    }
    return VmState(host=host, uuid=uuid, name=name, **{**values, **fields})
