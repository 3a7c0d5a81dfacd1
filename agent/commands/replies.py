"""The id cache: each command id's latest reply, sent again to a copy instead of running it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from agent.clock import SYSTEM_CLOCK, Clock
from shared.messages import CommandReply, CommandRequest


@dataclass
class _Entry:
    reply: CommandReply
    keep_until: float  # monotonic; kept at least this long, and while not final


class ReplyCache:
    """Thread-safe. Holds at most `size` ids; an id is kept until `remember_after` past its
    `not_after`, and while its reply is not final. Every remembered id may still be
    redelivered and must not run twice, so a full cache refuses new ids rather than forget
    one early."""

    def __init__(self, size: int, remember_after: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._size = size
        self._remember_after = remember_after
        self._clock = clock
        self._seen: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, request_id: str) -> CommandReply | None:
        """The latest reply sent under this id, or None for an id not (or no longer) known."""
        with self._lock:
            entry = self._seen.get(request_id)
            return entry.reply if entry is not None else None

    def has_room(self) -> bool:
        with self._lock:
            return self._room_locked()

    def _room_locked(self) -> bool:
        """Whether one more id can be remembered, after forgetting those that aged out."""
        if len(self._seen) < self._size:
            return True
        now = self._clock.monotonic()
        for key in [k for k, e in self._seen.items() if e.reply.is_final and e.keep_until < now]:
            del self._seen[key]
        return len(self._seen) < self._size

    def remember(self, request: CommandRequest, reply: CommandReply) -> None:
        """Caches the id's latest reply; a new id only while there is room (see `has_room`)."""
        left = (request.not_after - self._clock.now()).total_seconds()
        keep_until = self._clock.monotonic() + max(0.0, left) + self._remember_after
        with self._lock:
            entry = self._seen.get(request.id)
            if entry is not None:
                entry.reply = reply
            elif self._room_locked():
                self._seen[request.id] = _Entry(reply, keep_until)
