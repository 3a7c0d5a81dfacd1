"""What the hypervisor adapter reports of a domain, for the agent's inventory tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agent.hypervisor import DomainInfo

UA = "a0000000-0000-4000-8000-000000000001"


def info(
    uuid: str = UA, name: str = "web", state: int = 1, reason: int = 1, **kw: Any
) -> DomainInfo:
    base = DomainInfo(
        uuid=uuid,
        name=name,
        state=state,
        reason=reason,
        vcpus=2,
        memory_kib=2048 * 1024,
        max_memory_kib=4096 * 1024,
        autostart=True,
        persistent=True,
    )
    return replace(base, **kw)
