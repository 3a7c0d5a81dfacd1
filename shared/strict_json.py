"""Strict JSON text: what every client of the project reads, so never `NaN` or `Infinity`."""

from __future__ import annotations

import json
from typing import Any


def dumps(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` that refuses non-finite numbers instead of writing `NaN` or `Infinity`,
    which no JSON parser in a browser or a phone accepts: a client would fail on the whole
    document, or drop its connection, for one bad figure. Raises ValueError."""
    kwargs["allow_nan"] = False
    return json.dumps(obj, **kwargs)


def loads(s: str | bytes, **kwargs: Any) -> Any:
    return json.loads(s, **kwargs)
