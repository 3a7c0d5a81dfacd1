"""The agent and gateway as host services without containers: their systemd units pass
`systemd-analyze verify` with the hardening they promise, and scripts/install-agent.sh, run into
a staging root (`--root`), makes the user, the venv, the units and the 0600 env files."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from agent import __version__
from tests.support.package import ROOT, run, wheel_of

pytestmark = [pytest.mark.package, pytest.mark.timeout(900)]

UNITS = ("kvmsup-agent.service", "kvmsup-gateway.service")
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "Restart": "always",
    "User": "kvmsup",
}


def unit_settings(path: Path) -> dict[str, str]:
    """`Key=value` lines of a unit file (the last one wins, as in systemd)."""
    pairs = [
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    ]
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_hardened_and_read_their_env_file_from_etc_kvmsup(unit: str) -> None:
    settings = unit_settings(ROOT / "deploy" / unit)
    for key, value in HARDENING.items():
        assert settings.get(key) == value, (unit, key)
    name = unit.removeprefix("kvmsup-").removesuffix(".service")
    assert settings["EnvironmentFile"] == f"/etc/kvmsup/{name}.env"
    assert settings["ExecStart"] == f"/opt/kvmsup/bin/kvmsup-{name}"
    assert (ROOT / "deploy" / f"{name}.env.example").is_file()
    if name == "agent":
        assert settings["SupplementaryGroups"] == "libvirt"
    else:
        assert settings["StateDirectory"] == "kvmsup-gateway"


def systemd_root(tmp: Path) -> Path:
    """A root for `systemd-analyze verify --root`: systemd's own units (the targets the units
    name), ours in etc/, and their ExecStart programs; nothing on this machine is touched."""
    root = tmp / "root"
    # A copy, not a link: inside the root, links resolve against the root.
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "opt/kvmsup/bin").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(ROOT / "deploy" / unit, root / "etc/systemd/system" / unit)
        program = root / "opt/kvmsup/bin" / unit.removesuffix(".service")
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
    return root


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd not installed")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    root = systemd_root(tmp_path)
    verify = ["systemd-analyze", "verify", "--man=no", f"--root={root}"]
    out = subprocess.run([*verify, *UNITS], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr
    # And it can fail: a misspelt value and a missing program are reported.
    bad = root / "etc/systemd/system/kvmsup-bad.service"
    bad.write_text("[Service]\nExecStart=/opt/kvmsup/bin/nothing\nProtectSystem=strictly\n")
    out = subprocess.run([*verify, bad.name], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "strictly" in out.stderr, out.stderr


def staging_root(tmp: Path) -> Path:
    """A root with just the user database useradd needs, a `libvirt` group included."""
    root = tmp / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nlibvirt:x:990:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\nlibvirt:!::\n")
    for name in ("shadow", "gshadow"):
        (root / "etc" / name).chmod(0o600)
    return root


@pytest.mark.skipif(os.geteuid() != 0, reason="useradd --prefix needs root")
def test_install_script_into_a_staging_root(dist: Path, tmp_path: Path) -> None:
    root = staging_root(tmp_path)
    script = ROOT / "scripts" / "install-agent.sh"
    args: list[str | Path] = [script, "--root", root, "--source", wheel_of(dist), "--gateway"]
    out = run(args, cwd=tmp_path)
    assert f"kvmsup-agent {__version__}" in out
    user = [line for line in (root / "etc/passwd").read_text().splitlines() if "kvmsup" in line]
    assert len(user) == 1 and user[0].endswith(":/nonexistent:/usr/sbin/nologin"), user
    assert "libvirt:x:990:kvmsup" in (root / "etc/group").read_text()
    prefix = root / "opt/kvmsup"
    assert run([prefix / "bin/kvmsup-gateway", "--version"], tmp_path).split()[-1] == __version__
    for unit in UNITS:
        assert (root / "etc/systemd/system" / unit).read_text() == (
            ROOT / "deploy" / unit
        ).read_text()
    for env in ("agent.env", "gateway.env"):
        mode = (root / "etc/kvmsup" / env).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600, (env, oct(mode))
    # Again, as an upgrade: the filled-in env file is kept, the user not added twice.
    (root / "etc/kvmsup/agent.env").write_text("KVMSUP_HOST_ID=filled\n")
    run(args, cwd=tmp_path)
    assert (root / "etc/kvmsup/agent.env").read_text() == "KVMSUP_HOST_ID=filled\n"
    assert (root / "etc/passwd").read_text().count("kvmsup:") == 1
