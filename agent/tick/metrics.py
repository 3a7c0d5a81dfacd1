"""The metric formulas of SPEC §3 as pure functions: CPU %, memory view, counter rates."""

from __future__ import annotations

from dataclasses import dataclass

from agent.hypervisor.bulkstats import BalloonStats
from shared.messages import MemorySource

KIB_PER_MIB = 1024


def cpu_percent(
    prev_cpu_ns: int | None, prev_t_ns: int | None, cpu_ns: int | None, t_ns: int, vcpus: int
) -> float | None:
    """`100·Δcpu / (Δt·vcpus)` clamped to 0–100; None on a first sample or a counter reset."""
    if prev_cpu_ns is None or prev_t_ns is None or cpu_ns is None or vcpus <= 0:
        return None
    dt = t_ns - prev_t_ns
    dcpu = cpu_ns - prev_cpu_ns
    if dt <= 0 or dcpu < 0:
        return None
    return round(min(100.0, max(0.0, 100.0 * dcpu / (dt * vcpus))), 2)


def rate(prev: int | None, current: int | None, dt_s: float) -> float | None:
    """`max(0, Δcounter) / Δt` per second; None with no previous sample or Δt ≤ 0."""
    if prev is None or current is None or dt_s <= 0:
        return None
    return round(max(0, current - prev) / dt_s, 2)


@dataclass(frozen=True)
class MemoryView:
    used_mb: int | None
    total_mb: int | None
    percent: float | None
    source: MemorySource


def balloon_is_fresh(stats: BalloonStats, now_s: float, period_s: int) -> bool:
    """Guest figures count when the guest reported within three periods; an older
    `balloon.last-update` means the guest stopped reporting."""
    if stats.usable_kib is None or not stats.available_kib or stats.current_kib is None:
        return False
    if stats.last_update_s is None or stats.last_update_s <= 0:
        return False
    horizon = max(3 * period_s, 10) if period_s > 0 else 60
    return now_s - stats.last_update_s <= horizon


def memory_view(
    stats: BalloonStats, fallback_total_kib: int | None, now_s: float, period_s: int
) -> MemoryView:
    """Guest view when fresh, else the host view (rss), else none.

    The guest view is what `free` shows inside the guest: `available − usable`, i.e. MemTotal −
    MemAvailable, as a share of `available` (MemTotal). `current − usable` would count the
    memory the guest kernel reserved for itself at boot as used; on a small guest that is most
    of the figure. `total_mb` stays the VM's current (balloon) size in every view.
    """
    total_kib = stats.current_kib or fallback_total_kib
    total_mb = round(total_kib / KIB_PER_MIB) if total_kib else None
    if total_kib and balloon_is_fresh(stats, now_s, period_s):
        assert stats.usable_kib is not None and stats.available_kib is not None
        guest_kib = stats.available_kib
        used_kib = max(0, guest_kib - stats.usable_kib)
        return MemoryView(
            round(used_kib / KIB_PER_MIB), total_mb, _percent(used_kib, guest_kib), "guest"
        )
    if total_kib and stats.rss_kib:
        return MemoryView(
            round(stats.rss_kib / KIB_PER_MIB),
            total_mb,
            _percent(stats.rss_kib, total_kib),
            "rss",
        )
    return MemoryView(None, total_mb, None, "none")


def _percent(part: int, whole: int) -> float:
    return round(min(100.0, max(0.0, 100.0 * part / whole)), 2)


def node_cpu_percent(prev: dict[str, int] | None, current: dict[str, int] | None) -> float | None:
    """Host CPU busy % from two `virNodeGetCPUStats` readings (kernel+user over the total)."""
    if not prev or not current:
        return None
    keys = ("kernel", "user", "idle", "iowait")
    if not all(k in prev and k in current for k in keys):
        return None
    busy = (current["kernel"] + current["user"]) - (prev["kernel"] + prev["user"])
    total = sum(current[k] for k in keys) - sum(prev[k] for k in keys)
    if total <= 0 or busy < 0:
        return None
    return round(min(100.0, 100.0 * busy / total), 2)
