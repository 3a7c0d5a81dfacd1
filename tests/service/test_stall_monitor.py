"""The stall monitor on a real gevent loop: a process patched as gunicorn's worker is, with the
monitor installed as the gateway installs it, blocks its loop for 100 ms on purpose; the
monitor counts one stall of about that length and logs the blocking function's stack."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.support.procs import ROOT

pytestmark = pytest.mark.service

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, logging, sys, time
    import gevent
    from gateway import stalls

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    assert stalls.install()
    gevent.sleep(0.1)  # the loop runs: the monitor thread is watching it

    def deliberately_block_the_loop():
        end = time.perf_counter() + 0.1
        while time.perf_counter() < end:
            pass

    deliberately_block_the_loop()
    gevent.sleep(0.3)  # the loop serves again: the stall is over
    f = stalls.MONITOR.figures()
    print(json.dumps({"count": f.count, "seconds": f.seconds, "buckets": f.buckets}))
    """
)


def test_a_deliberate_100_ms_block_is_one_stall_logged_with_its_stack() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["count"] == 1, (figures, done.stderr[-2000:])
    # Measured to the monitor's look (20 ms) on either side, plus a busy machine's slack.
    assert 0.06 <= figures["seconds"] <= 0.3, figures
    assert "the event loop is blocked" in done.stderr
    assert "deliberately_block_the_loop" in done.stderr


def test_outside_gevent_nothing_is_installed() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from gateway import stalls; print(stalls.install())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "False", done.stderr
