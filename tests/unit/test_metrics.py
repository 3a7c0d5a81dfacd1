"""The SPEC §3 metric formulas: CPU %, counter rates, the memory view and host CPU %."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.hypervisor.bulkstats import BalloonStats
from agent.tick.metrics import (
    balloon_is_fresh,
    cpu_percent,
    memory_view,
    node_cpu_percent,
    rate,
)

pytestmark = pytest.mark.unit

S = 1_000_000_000  # ns per second


# -- cpu_percent ----------------------------------------------------------------------------
def test_cpu_first_sample_is_none() -> None:
    assert cpu_percent(None, None, 5 * S, 10 * S, 2) is None


def test_cpu_counter_going_backwards_is_none() -> None:
    # The guest restarted: its cpu.time starts again from 0.
    assert cpu_percent(50 * S, 0, 1 * S, 2 * S, 1) is None


def test_cpu_zero_or_negative_interval_is_none() -> None:
    assert cpu_percent(1 * S, 10 * S, 2 * S, 10 * S, 1) is None
    assert cpu_percent(1 * S, 10 * S, 2 * S, 9 * S, 1) is None


def test_cpu_missing_current_counter_is_none() -> None:
    assert cpu_percent(1 * S, 0, None, 2 * S, 1) is None


@pytest.mark.parametrize(
    ("dcpu_ns", "dt_ns", "vcpus", "expected"),
    [
        (1 * S, 2 * S, 1, 50.0),  # half of one vCPU over 2 s
        (1 * S, 2 * S, 2, 25.0),  # the same work spread over two vCPUs' capacity
        (3 * S, 2 * S, 4, 37.5),
        (0, 2 * S, 2, 0.0),  # idle
        (1, 3 * S, 1, 0.0),  # rounded to two decimals
        (S // 3, S, 1, 33.33),
    ],
)
def test_cpu_formula(dcpu_ns: int, dt_ns: int, vcpus: int, expected: float) -> None:
    prev_cpu, prev_t = 7 * S, 100 * S
    got = cpu_percent(prev_cpu, prev_t, prev_cpu + dcpu_ns, prev_t + dt_ns, vcpus)
    assert got == pytest.approx(expected)


def test_cpu_is_clamped_to_100() -> None:
    # More CPU time than wall time × vCPUs (accounting jitter) never shows above 100 %.
    assert cpu_percent(0, 0, 5 * S, 2 * S, 2) == 100.0


def test_cpu_with_zero_vcpus_is_none() -> None:
    assert cpu_percent(0, 0, 1 * S, 2 * S, 0) is None


# -- rate -----------------------------------------------------------------------------------
def test_rate_first_sample_is_none() -> None:
    assert rate(None, 1000, 2.0) is None


def test_rate_counter_going_backwards_is_zero() -> None:
    assert rate(5000, 100, 2.0) == 0.0


def test_rate_zero_interval_is_none() -> None:
    assert rate(0, 1000, 0.0) is None
    assert rate(0, 1000, -1.0) is None


def test_rate_worked_number() -> None:
    assert rate(1_000, 9_000, 2.0) == 4000.0
    assert rate(0, 10, 3.0) == pytest.approx(3.33)


# -- memory_view ----------------------------------------------------------------------------
NOW = 1_700_000_000.0


def test_memory_guest_view_when_balloon_is_fresh() -> None:
    stats = BalloonStats(
        current_kib=4 * 1024 * 1024,
        available_kib=4 * 1024 * 1024,
        usable_kib=3 * 1024 * 1024,
        last_update_s=int(NOW) - 4,
        rss_kib=2 * 1024 * 1024,
    )
    view = memory_view(stats, None, NOW, 5)
    assert view.source == "guest"
    assert view.used_mb == 1024.0  # available − usable
    assert view.total_mb == 4096.0
    assert view.percent == 25.0  # used / available


def test_memory_guest_view_is_what_free_shows_inside_the_guest() -> None:
    # Figures of a real 128 MiB Debian cloud-kernel guest: its kernel keeps 36 MiB for itself
    # (MemTotal 93776 KiB), `free` inside says 23 MiB used (MemTotal − MemAvailable). Counting
    # from the balloon's current size would report 59 MiB, most of it the kernel's reservation.
    stats = BalloonStats(
        current_kib=131_072,
        available_kib=93_776,
        usable_kib=70_184,
        last_update_s=int(NOW) - 1,
        rss_kib=239_340,
    )
    view = memory_view(stats, None, NOW, 5)
    assert view.source == "guest"
    assert view.used_mb == 23  # (93776 − 70184) / 1024
    assert view.total_mb == 128  # the VM's size, as the seed showed it
    assert view.percent == 25.16  # of the memory the guest has


def test_memory_guest_view_needs_the_guest_total() -> None:
    # No MemTotal from the guest: its used figure cannot be known, so the host view shows.
    stats = BalloonStats(
        current_kib=1024 * 1024,
        available_kib=None,
        usable_kib=512 * 1024,
        last_update_s=int(NOW) - 1,
        rss_kib=300 * 1024,
    )
    assert memory_view(stats, None, NOW, 5).source == "rss"
    assert memory_view(replace(stats, available_kib=0), None, NOW, 5).source == "rss"


def test_memory_stale_balloon_falls_back_to_rss() -> None:
    stats = BalloonStats(
        current_kib=2048 * 1024,
        usable_kib=1024 * 1024,
        last_update_s=int(NOW) - 3600,
        rss_kib=512 * 1024,
    )
    view = memory_view(stats, None, NOW, 5)
    assert view.source == "rss"
    assert view.used_mb == 512.0
    assert view.total_mb == 2048.0
    assert view.percent == 25.0


def test_memory_rss_when_guest_never_reported() -> None:
    stats = BalloonStats(
        current_kib=1024 * 1024, usable_kib=None, last_update_s=None, rss_kib=256 * 1024
    )
    view = memory_view(stats, None, NOW, 5)
    assert view.source == "rss"
    assert view.used_mb == 256.0


def test_memory_nothing_known_is_none() -> None:
    view = memory_view(BalloonStats(), 1024 * 1024, NOW, 5)
    assert view.source == "none"
    assert view.used_mb is None
    assert view.percent is None
    assert view.total_mb == 1024.0  # the configured size still shows


def test_memory_nothing_at_all() -> None:
    view = memory_view(BalloonStats(), None, NOW, 5)
    assert (view.used_mb, view.total_mb, view.percent, view.source) == (None, None, None, "none")


def test_memory_period_zero_still_uses_recent_guest_figures() -> None:
    # With period 0 the agent leaves guests alone; figures someone else asked for still count.
    fresh = BalloonStats(
        current_kib=1024 * 1024,
        available_kib=1000 * 1024,
        usable_kib=768 * 1024,
        last_update_s=int(NOW) - 30,
        rss_kib=900 * 1024,
    )
    assert memory_view(fresh, None, NOW, 0).source == "guest"
    old = BalloonStats(
        current_kib=1024 * 1024,
        available_kib=1000 * 1024,
        usable_kib=768 * 1024,
        last_update_s=int(NOW) - 600,
        rss_kib=900 * 1024,
    )
    assert memory_view(old, None, NOW, 0).source == "rss"


def test_balloon_freshness_horizon() -> None:
    base = BalloonStats(current_kib=1, available_kib=1, usable_kib=1)
    assert balloon_is_fresh(replace(base, last_update_s=int(NOW) - 15), NOW, 5)
    assert not balloon_is_fresh(replace(base, last_update_s=int(NOW) - 16), NOW, 5)
    assert not balloon_is_fresh(base, NOW, 5)  # never updated
    assert not balloon_is_fresh(replace(base, last_update_s=0), NOW, 5)


def test_memory_percent_never_exceeds_100() -> None:
    stats = BalloonStats(current_kib=1024, rss_kib=4096)
    assert memory_view(stats, None, NOW, 5).percent == 100.0


# -- node_cpu_percent -----------------------------------------------------------------------
def test_node_cpu_first_reading_is_none() -> None:
    cur = {"kernel": 10, "user": 20, "idle": 70, "iowait": 0}
    assert node_cpu_percent(None, cur) is None


def test_node_cpu_worked_number() -> None:
    prev = {"kernel": 100, "user": 200, "idle": 700, "iowait": 0}
    cur = {"kernel": 150, "user": 250, "idle": 800, "iowait": 0}
    # busy 100 of 200 total
    assert node_cpu_percent(prev, cur) == 50.0


def test_node_cpu_missing_keys_or_no_progress_is_none() -> None:
    prev = {"kernel": 1, "user": 1, "idle": 1, "iowait": 1}
    assert node_cpu_percent(prev, {"kernel": 2, "user": 2, "idle": 2}) is None
    assert node_cpu_percent(prev, dict(prev)) is None
    # Counters went back (host rebooted under a long-lived agent).
    assert node_cpu_percent(prev, {"kernel": 0, "user": 0, "idle": 50, "iowait": 1}) is None


def test_memory_figures_are_whole_mib_as_the_seed_sent_them() -> None:
    # The seed's `memory_used_mb: 925`, `memory_total_mb: 2048`: a Dart `as int` must not throw.
    stats = BalloonStats(
        current_kib=2048 * 1024,
        available_kib=2048 * 1024,
        usable_kib=1123 * 1024 - 300,
        last_update_s=100,
    )
    view = memory_view(stats, None, now_s=101, period_s=5)
    assert view.source == "guest"
    assert (view.used_mb, view.total_mb) == (925, 2048)
    assert type(view.used_mb) is int and type(view.total_mb) is int
    rss = memory_view(BalloonStats(current_kib=2048 * 1024, rss_kib=700 * 1024 + 100), None, 0, 5)
    assert rss.source == "rss" and type(rss.used_mb) is int and rss.used_mb == 700
