"""Token parsing and lookup (SPEC §7)."""

from __future__ import annotations

import time

import pytest

from gateway.auth import Authenticator, Principal, parse_tokens
from gateway.errors import NotAuthenticated, Throttled
from gateway.throttle import FailureThrottle

pytestmark = pytest.mark.service


# -- trust boundary (issue: tokens of the wrong type, guessing, secrets in messages) ----------

SECRET = "aaaaaaaaaa"


def test_concurrent_guesses_get_no_more_tries_than_the_burst() -> None:
    import threading

    class SlowCheck(Authenticator):
        """A check that lets other threads run meanwhile (a loaded machine, a long list)."""

        def identify(self, secret: object) -> Principal | None:
            time.sleep(0.02)
            return super().identify(secret)

    auth = SlowCheck(parse_tokens(f"alice:viewer:{SECRET}"), FailureThrottle(3, 0.001))
    start = threading.Barrier(40)
    outcomes: list[str] = []

    def guess(i: int) -> None:
        start.wait()
        try:
            auth.authenticate(f"guess-{i}-{'y' * 30}", "10.0.0.9", "rest", now=0.0)
        except Throttled:
            outcomes.append("throttled")
        except NotAuthenticated:
            outcomes.append("checked")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("checked") == 3 and outcomes.count("throttled") == 37
