"""The package tier: the wheel built once per session, installed as users install it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.package import build_dist


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel and sdist of the tree as it is now (tests/support/package.py)."""
    return build_dist(tmp_path_factory.mktemp("package"))
