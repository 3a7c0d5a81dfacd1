"""The libvirt adapter: event-loop thread, connection supervisor, lookups, actions, bulk stats.

The only package that imports `libvirt`. It hands out plain values and `RawSample`s, never
`virDomain` objects; libvirt callbacks only enqueue `HypervisorEvent`s (a blocked event loop
stops libvirt's own housekeeping and the connection drops).

Owns `loop` (libvirt's event loop thread), `connection` (connect, probe, reconnect),
`operations` (lookups, lifecycle and snapshot actions), `snapshots` (what an internal snapshot
needs, its calls and its listing), `records` (plain values and error translation),
`stats` with `bulkstats` (one bulk stats call into `RawSample`s, the parsing pure),
`guestagent` (a running guest's addresses and `guestInfo`, raw) and `callpool` (bounded
threads with a deadline for the calls that may hang on a stuck guest).

May import: `agent.errors`, `libvirt` and the standard library; nothing else of the agent.
"""

from agent.hypervisor.connection import PROBE_DEADLINE_S, PROBE_EVERY_S, Connection
from agent.hypervisor.guestagent import GuestReading
from agent.hypervisor.loop import start_event_loop
from agent.hypervisor.operations import Hypervisor
from agent.hypervisor.records import (
    DomainInfo,
    EventSink,
    HypervisorEvent,
    NodeFacts,
    domain_info,
    translate,
    version_text,
)
from agent.hypervisor.snapshots import SnapshotOrder, SnapshotRecord
from agent.hypervisor.stats import STATS_FLAGS, STATS_GROUPS, BulkSampler

__all__ = [
    "PROBE_DEADLINE_S",
    "PROBE_EVERY_S",
    "STATS_FLAGS",
    "STATS_GROUPS",
    "BulkSampler",
    "Connection",
    "DomainInfo",
    "EventSink",
    "GuestReading",
    "Hypervisor",
    "HypervisorEvent",
    "NodeFacts",
    "SnapshotOrder",
    "SnapshotRecord",
    "domain_info",
    "start_event_loop",
    "translate",
    "version_text",
]
