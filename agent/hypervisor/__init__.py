"""The libvirt adapter: event-loop thread, connection supervisor, lookups, actions, bulk stats.

The only package that imports `libvirt`. It hands out plain values and `RawSample`s, never
`virDomain` objects; libvirt callbacks only enqueue `HypervisorEvent`s (a blocked event loop
stops libvirt's own housekeeping and the connection drops).
"""

from agent.hypervisor.connection import PROBE_DEADLINE_S, PROBE_EVERY_S, Connection
from agent.hypervisor.loop import start_event_loop
from agent.hypervisor.operations import Hypervisor
from agent.hypervisor.records import (
    DomainInfo,
    HypervisorEvent,
    NodeFacts,
    domain_info,
    translate,
    version_text,
)
from agent.hypervisor.stats import STATS_FLAGS, STATS_GROUPS, BulkSampler

__all__ = [
    "PROBE_DEADLINE_S",
    "PROBE_EVERY_S",
    "STATS_FLAGS",
    "STATS_GROUPS",
    "BulkSampler",
    "Connection",
    "DomainInfo",
    "Hypervisor",
    "HypervisorEvent",
    "NodeFacts",
    "domain_info",
    "start_event_loop",
    "translate",
    "version_text",
]
