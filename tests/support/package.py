"""The project as a user installs it: `python -m build` on a copy of the tree, and fresh
virtualenvs (no site packages, nothing of the test's own) that pip fills from the result."""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What a clean checkout holds; caches and local state would only slow the copy down.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", "data", ".demo"
)
# Nothing of this process's import path may leak into what runs from the new venvs.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def run(args: list[str | Path], cwd: Path, timeout: float = 600) -> str:
    """Run `args`; its stdout, or an assertion error with the end of both outputs."""
    out = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert out.returncode == 0, f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def fresh_venv(path: Path) -> Path:
    """A virtualenv of the base interpreter with pip and nothing else; its bin/."""
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(path)
    return path / "bin"


def build_dist(work: Path) -> Path:
    """`python -m build` (with `build` in a venv of its own) on a copy of the tree: the sdist,
    then the wheel built from it, so a file the sdist forgets fails the wheel too."""
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES, symlinks=True)
    tools = fresh_venv(work / "build-venv")
    run([tools / "pip", "install", "-q", "build"], cwd=work)
    run([tools / "python", "-m", "build", "--outdir", work / "dist", source], cwd=work)
    return work / "dist"


def wheel_of(dist: Path) -> Path:
    return next(dist.glob("kvmsup-*.whl"))


def install(dist: Path, where: Path, extra: str) -> Path:
    """`pip install 'kvmsup[<extra>]'` from the built wheel into a new venv; its bin/."""
    bin_dir = fresh_venv(where)
    run([bin_dir / "pip", "install", "-q", f"{wheel_of(dist)}[{extra}]"], cwd=where)
    # Imported from the venv, not from a checkout on the path.
    where_from = run([bin_dir / "python", "-c", "import shared; print(shared.__file__)"], where)
    assert where_from.startswith(str(where)), where_from
    return bin_dir
