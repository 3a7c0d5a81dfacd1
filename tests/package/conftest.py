"""The package tier: the wheel built once per session, installed as users install it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.package import build_dist

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The whole tier on one pytest-xdist worker (group `package`): the wheel is built once."""
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.xdist_group("package"))


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel and sdist of the tree as it is now (tests/support/package.py)."""
    return build_dist(tmp_path_factory.mktemp("package"))
