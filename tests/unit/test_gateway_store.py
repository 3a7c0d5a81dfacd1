"""The SQLite store: history window, persistence across reopen, events, audit upserts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.adapters.store import Store, StoreError

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(str(tmp_path / "sub" / "gw.db"), history_minutes=1, audit_days=1)
    s.start()
    return s


def test_an_unusable_path_refuses_to_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = Store(str(blocker / "gw.db"), 1, 1)  # built: nothing is opened yet
    with pytest.raises(StoreError, match=r"cannot open the database .*gw\.db"):
        store.start()


def test_building_a_store_leaves_no_file(tmp_path: Path) -> None:
    Store(str(tmp_path / "sub" / "gw.db"), 1, 1)
    assert list(tmp_path.iterdir()) == []
