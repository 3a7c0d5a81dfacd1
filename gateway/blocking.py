"""Blocking calls kept off the event loop.

Under gunicorn's gevent worker (the production server) every thread of the gateway is a
greenlet on one OS thread, and a C call that blocks without yielding (SQLite's `execute`,
`commit`, a checkpoint's fsync) stops every socket of the process until it returns. `call`
runs such a function on gevent's pool of real OS threads and suspends only the calling
greenlet. Outside gevent (Werkzeug in development, the test client) it is a plain call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def under_gevent() -> bool:
    """True once gevent has monkey-patched `threading` in this process (gunicorn's worker)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


def call(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`fn(*args, **kwargs)`, on a native thread when the loop must not wait for it."""
    if not under_gevent():
        return fn(*args, **kwargs)
    import gevent

    result: R = gevent.get_hub().threadpool.apply(fn, args, kwargs)
    return result
