"""The agent's tree keeps the shape its package docstrings promise: small folders, short
functions, and imports that only point the way each package says they may."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

AGENT = Path(__file__).resolve().parents[2] / "agent"
PACKAGES = ("hypervisor", "commands", "tick", "homeassistant")
MAX_MODULES = 12
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(AGENT.rglob("*.py"))


def _agent_imports(path: Path) -> set[str]:
    """Every `agent...` module the file imports, at any depth (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n for n in names if n == "agent" or n.startswith("agent."))
    return found


def _within(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def test_no_folder_of_the_agent_holds_more_than_twelve_modules() -> None:
    for folder in [AGENT, *(p for p in AGENT.iterdir() if p.is_dir())]:
        count = len(list(folder.glob("*.py")))
        assert count <= MAX_MODULES, f"{folder.name}/ holds {count} modules"


def test_every_package_says_what_it_owns_and_may_import() -> None:
    for name in PACKAGES:
        doc = ast.get_docstring(ast.parse((AGENT / name / "__init__.py").read_text("utf-8")))
        assert doc and "May import" in doc, f"{name}/__init__.py lacks its rules"


def test_no_agent_function_is_longer_than_sixty_lines() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(AGENT)}:{node.name} ({lines} lines)")
    assert not long, long


def test_imports_point_only_the_way_the_packages_allow() -> None:
    rules: dict[str, tuple[str, ...]] = {
        "hypervisor": ("agent.errors", "agent.hypervisor"),
        "homeassistant": ("agent.homeassistant",),  # and `from agent import __version__`
    }
    wrong = []
    for path in _modules():
        rel = path.relative_to(AGENT)
        package = rel.parts[0] if len(rel.parts) > 1 else None
        for module in _agent_imports(path):
            if package in rules:
                ok = module == "agent" or _within(module, rules[package])
            elif package == "commands":
                ok = not _within(module, ("agent.tick", "agent.service"))
            elif package == "tick":
                ok = not _within(module, ("agent.commands", "agent.service"))
            elif rel.name in ("service.py", "__main__.py"):
                ok = True  # the wiring
            else:  # the top-level modules sit below commands/ and tick/
                ok = not _within(module, ("agent.commands", "agent.tick", "agent.service"))
            if not ok:
                wrong.append(f"{rel} imports {module}")
    assert not wrong, wrong
