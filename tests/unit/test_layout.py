"""The product's tree keeps the shape its package docstrings promise: small folders, short
functions, imports that only point the way each package says they may, and no reference to
documents outside the repository."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("agent", "gateway", "shared")
AGENT = ROOT / "agent"
GATEWAY = ROOT / "gateway"
# Each package whose `__init__` docstring states what it owns and what it may import.
PACKAGES = (
    "gateway",
    "agent/hypervisor",
    "agent/commands",
    "agent/tick",
    "agent/homeassistant",
    "gateway/core",
    "gateway/adapters",
    "gateway/web",
    "gateway/realtime",
    "shared",
)
MAX_MODULES = 12
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
# The house's notes on library traps live outside the repository: the code and the docs give
# their reasons in their own words instead of pointing there.
OUTSIDE_NOTES = "PITFALLS"


def _modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _product_modules() -> list[Path]:
    return [p for name in PRODUCT for p in _modules(ROOT / name)]


def _imports(path: Path) -> set[str]:
    """Every module the file imports, at any depth (lazy imports included). `from a import b`
    counts as `a.b`, so `from gateway import blocking` is `gateway.blocking`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, known: set[str]) -> str | None:
    """The product module `name` is, or is an attribute of (`gateway.core.jobs.Job` is
    `gateway.core.jobs`); None outside the product."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _module_level_imports(path: Path) -> set[str]:
    """The modules a file imports when it is imported: its top level, including blocks of
    `if` (`TYPE_CHECKING` too: the type checker follows those) and `try`, but not function
    bodies (a lazy import runs only when its function does)."""
    found: set[str] = set()
    todo: list[ast.stmt] = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.If | ast.Try | ast.ClassDef | ast.With):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)
    return found


def _import_graph() -> dict[str, set[str]]:
    """Product module -> the product modules it imports at module level."""
    paths = {_module_name(p): p for p in _product_modules()}
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = {_resolve(m, known) for m in _module_level_imports(path)}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def _within(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def _functions(path: Path) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_folder_of_the_product_holds_more_than_twelve_modules() -> None:
    crowded = []
    for name in PRODUCT:
        root = ROOT / name
        for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            count = len(list(folder.glob("*.py")))
            if count > MAX_MODULES:
                crowded.append(f"{folder.relative_to(ROOT)}/ holds {count} modules")
    assert not crowded, crowded


def test_no_function_of_the_product_is_longer_than_sixty_lines() -> None:
    long = []
    for path in _product_modules():
        for node in _functions(path):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(ROOT)}:{node.name}:{lines}")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (file:function:lines): {long}"


def test_nothing_points_to_notes_outside_the_repository() -> None:
    files = [ROOT / "README.md"]
    for name in (*PRODUCT, "docs"):
        files += [
            p for p in (ROOT / name).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ]
    citing = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # an image or another binary asset
        if OUTSIDE_NOTES in text:
            citing.append(str(path.relative_to(ROOT)))
    assert not citing, f"{OUTSIDE_NOTES} is named in {citing}: write the reason instead"


@pytest.mark.parametrize("product", PRODUCT)
def test_no_module_of_the_product_is_longer_than_four_hundred_lines(product: str) -> None:
    long = []
    for path in _modules(ROOT / product):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(ROOT)}: {lines}")
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_the_product_has_no_import_circle() -> None:
    """Module-level imports only (`TYPE_CHECKING` blocks included): a lazy import inside a
    function is how a composition root such as `gateway.create_app` reaches every layer
    without being imported by them first, so it closes no circle at import time."""
    graph = _import_graph()
    circles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            circles.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert not circles, [" -> ".join(c) for c in circles]


_WEB_LIBRARIES = ("flask", "werkzeug", "flask_socketio", "socketio", "engineio")


@pytest.mark.parametrize("module", ["gateway.service", "gateway.auth"])
def test_the_wiring_and_the_token_logic_import_no_flask(module: str) -> None:
    """Neither directly nor through any gateway module they import, lazily or not: the web
    layer holds the request globals, and the wiring builds the service without them."""
    paths = {_module_name(p): p for p in _product_modules()}
    known = set(paths)
    seen: set[str] = set()
    todo = [module]
    wrong = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in _imports(paths[name]):
            if _within(imported, _WEB_LIBRARIES):
                wrong.append(f"{name} imports {imported}")
            target = _resolve(imported, known)
            if target is not None and target != name:
                todo.append(target)
    assert not wrong, f"{module} reaches Flask: {wrong}"


def test_every_package_says_what_it_owns_and_may_import() -> None:
    silent = []
    for name in PACKAGES:
        doc = ast.get_docstring(ast.parse((ROOT / name / "__init__.py").read_text("utf-8")))
        if not doc or "May import" not in doc or len(doc.split("May import")[0].strip()) < 20:
            silent.append(name)
    assert not silent, f"these packages' __init__ docstrings lack what they own or import: {silent}"


def test_agent_imports_point_only_the_way_the_packages_allow() -> None:
    rules: dict[str, tuple[str, ...]] = {
        "hypervisor": ("agent.errors", "agent.hypervisor"),
        "homeassistant": ("agent.homeassistant", "agent.__version__"),
    }
    wrong = []
    for path in _modules(AGENT):
        rel = path.relative_to(AGENT)
        package = rel.parts[0] if len(rel.parts) > 1 else None
        for module in _imports(path):
            if not _within(module, ("agent",)):
                continue
            if package in rules:
                ok = _within(module, rules[package])
            elif package == "commands":
                ok = not _within(module, ("agent.tick", "agent.service"))
            elif package == "tick":
                ok = not _within(module, ("agent.commands", "agent.service"))
            elif rel.name in ("service.py", "__main__.py"):
                ok = True  # the wiring
            else:  # the top-level modules sit below commands/ and tick/
                ok = not _within(module, ("agent.commands", "agent.tick", "agent.service"))
            if not ok:
                wrong.append(f"agent/{rel} imports {module}")
    assert not wrong, wrong


# What each gateway package may import of the gateway, and which libraries it must not touch,
# as its `__init__` docstring states them.
_GATEWAY_TOP = (
    "gateway.throttle",
    "gateway.stalls",
    "gateway.service",
    "gateway.current",
    "gateway.auth",
    "gateway.errors",
    "gateway.config",
    "gateway.blocking",
    "gateway.inputs",
)
GATEWAY_RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "core": (
        ("gateway.core", "gateway.errors"),
        ("flask", "werkzeug", "flask_socketio", "socketio", "engineio", "paho", "sqlite3"),
    ),
    "adapters": (
        (
            "gateway.adapters",
            "gateway.core",
            "gateway.config",
            "gateway.errors",
            "gateway.blocking",
        ),
        ("flask", "werkzeug", "flask_socketio", "socketio", "engineio"),
    ),
    "web": (
        (
            "gateway.web",
            "gateway.core",
            *_GATEWAY_TOP,
            # The adapters' constants, and nothing of their I/O.
            "gateway.adapters.bus.gateway_version",
            "gateway.adapters.history_db.Windows",
        ),
        ("flask_socketio", "socketio", "engineio", "paho", "sqlite3"),
    ),
    "realtime": (
        ("gateway.realtime", "gateway.core", *_GATEWAY_TOP, "gateway.web.http_errors"),
        ("paho", "sqlite3"),
    ),
}


# The gateway's top-level modules sit below every package but the adapters' and the core's use
# of a few of them; the entry points (`__init__`'s create_app, `__main__`, `serve`) compose
# everything, and `current` is the one module of them bound to Flask's request.
_GATEWAY_ENTRY_POINTS = ("__init__.py", "__main__.py", "serve.py")


def test_gateway_top_level_modules_point_only_the_way_the_package_allows() -> None:
    wrong = []
    for path in sorted(GATEWAY.glob("*.py")):
        if path.name in _GATEWAY_ENTRY_POINTS:
            continue
        libraries = ("paho", "sqlite3") if path.name == "current.py" else _WEB_LIBRARIES
        for module in _imports(path):
            if _within(module, ("gateway.web", "gateway.realtime", *libraries)):
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, wrong


def test_gateway_imports_point_only_the_way_the_packages_allow() -> None:
    wrong = []
    for package, (allowed, libraries) in GATEWAY_RULES.items():
        for path in _modules(GATEWAY / package):
            for module in _imports(path):
                if _within(module, ("gateway",)):
                    ok = _within(module, allowed)
                else:
                    ok = not _within(module, libraries)
                if not ok:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, wrong


def test_shared_imports_neither_the_agent_nor_the_gateway() -> None:
    # paho only where the one client setup lives: the models and topics stay importable alone.
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in _modules(ROOT / "shared")
        for module in _imports(path)
        if _within(module, ("agent", "gateway", "flask", "libvirt", "sqlite3"))
        or (_within(module, ("paho",)) and path.name != "mqtt.py")
    ]
    assert not wrong, wrong
