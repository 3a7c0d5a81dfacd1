"""The agent's refusal log: every refused message counted, each kind logged at 1, 10, 100..."""

from __future__ import annotations

import logging

import pytest

from agent.refusals import MAX_KINDS, RefusalLog

pytestmark = pytest.mark.unit


def test_a_flood_of_one_kind_is_logged_three_times_in_250(caplog: pytest.LogCaptureFixture) -> None:
    log = RefusalLog()
    with caplog.at_level(logging.WARNING, logger="agent.refusals"):
        for n in range(250):
            log.refused("bad_request", f"Invalid JSON at line 1 column {n}", "junk %d", n)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0] == "refused bad_request: junk 0"
    assert "junk 99" in lines[2] and "refused 100 times like this" in lines[2]
    assert log.counts["bad_request"] == 250


def test_kinds_are_told_apart_by_code_and_reason_not_by_quoted_input(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = RefusalLog()
    with caplog.at_level(logging.WARNING, logger="agent.refusals"):
        log.refused("unknown_action", "'FOO' is not one of ON, OFF", "a")
        log.refused("unknown_action", "'BAR' is not one of ON, OFF", "b")
        log.refused("bad_request", "payload is not valid UTF-8", "c")
        log.refused("too_large", "payload of 9 bytes exceeds 8", "d")
    assert [r.getMessage().split(": ")[1] for r in caplog.records] == ["a", "c", "d"]


def test_the_kinds_tracked_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    log = RefusalLog()
    with caplog.at_level(logging.WARNING, logger="agent.refusals"):
        for n in range(MAX_KINDS + 500):
            log.refused("bad_request", "x" * (n % 60) + chr(97 + n % 26) * (n // 60), "m")
    assert len(log._kinds) <= MAX_KINDS + 1
