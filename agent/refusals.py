"""Inbound MQTT messages the agent refuses: counted, logged without flooding the log.

Anyone allowed to publish on `cmd` or `set` can send garbage as fast as the broker takes it; one
warning per message would bury the log (and fill the disk). Each kind of refusal (its code and
the shape of its reason) is logged the 1st, 10th, 100th, ... time, with the count so far.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter

logger = logging.getLogger(__name__)

MAX_KINDS = 256  # past this many distinct kinds, refusals are told apart by their code only
_QUOTED = re.compile(r"'[^']*'")
_DETAIL = re.compile(r"[^a-z ]+")


def _is_power_of_ten(n: int) -> bool:
    return str(n).rstrip("0") == "1"


class RefusalLog:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()  # every refusal per code since the start
        self._kinds: Counter[str] = Counter()
        self._lock = threading.Lock()

    def refused(self, code: str, detail: str, fmt: str, *args: object) -> None:
        """Count one refused message; log `fmt % args` when its kind's count is 1, 10, 100..."""
        # The reason's words without numbers or quoted input: `line 1 column 7` and `column 9`
        # are one kind, and so are `'FOO' is not an action` and `'BAR' is not an action`.
        words = _DETAIL.sub("", _QUOTED.sub("", detail).lower())
        kind = f"{code}:{words[:60]}"
        with self._lock:
            self.counts[code] += 1
            if kind not in self._kinds and len(self._kinds) >= MAX_KINDS:
                kind = code
            self._kinds[kind] += 1
            seen = self._kinds[kind]
        if not _is_power_of_ten(seen):
            return
        suffix = "" if seen == 1 else f" (refused {seen} times like this; logged at 1, 10, 100...)"
        logger.warning("refused %s: %s%s", code, fmt % args, suffix)
