"""`make demo` (scripts/demo.py): the gateway it starts keeps its state in the demo's workdir."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kvmsup_demo", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_gateway_database_is_in_the_demo_workdir(tmp_path: Path) -> None:
    """Not the repository's ./data/gateway.db: a fresh demo must not show old runs' events."""
    demo = load_demo()
    env = demo.gateway_env(tmp_path, 5000, "mqtt://127.0.0.1:1883", "t0ken")
    db = Path(env["KVMSUP_DB"])
    assert db.is_absolute() and db.parent == tmp_path
    from gateway.config import Settings

    settings = Settings(**{k.removeprefix("KVMSUP_").lower(): v for k, v in env.items()})
    assert (settings.db, settings.port, settings.gateway_id) == (str(db), 5000, "demo")
