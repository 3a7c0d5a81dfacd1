"""The container tier's machinery: a Docker engine (started when none runs), the
debian:bookworm-slim base (made with debootstrap when no registry has it), the images built by
docker-compose from the repository's Dockerfiles, and stacks brought up as docker/README.md
says, under a project name of the tier's own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
BASE_IMAGE = "debian:bookworm-slim"
# Extra CA certificates of this machine (an intercepting proxy's), handed to pip in the builds
# the way docker/README.md tells a user behind such a proxy.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")


def sh(args: list[str], timeout: float = 120, env: dict[str, str] | None = None,
       check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{args} exited {out.returncode}:\n{out.stdout[-3000:]}\n"
                             f"{out.stderr[-3000:]}")  # fmt: skip
    return out


def engine_answers() -> bool:
    return sh(["docker", "info"], timeout=30, check=False).returncode == 0


def start_engine(log: Path) -> subprocess.Popen[bytes] | None:
    """dockerd, when none answers (no systemd here to start it); None if one already runs."""
    if engine_answers():
        return None
    binary = shutil.which("dockerd")
    if binary is None:
        raise RuntimeError("dockerd is not installed: run `make install` as root (docker.io)")
    with log.open("ab") as out:
        proc = subprocess.Popen([binary], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not engine_answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dockerd did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    return proc


def ensure_base_image(work: Path) -> str:
    """The base every Dockerfile starts from. A user pulls it; where no registry answers, the
    same Debian release is made from the Debian mirror, as docker/README.md says."""
    if sh(["docker", "image", "inspect", BASE_IMAGE], check=False).returncode == 0:
        return "present"
    if sh(["docker", "pull", BASE_IMAGE], timeout=300, check=False).returncode == 0:
        return "pulled"
    target = work / "bookworm"
    sh(["debootstrap", "--variant=minbase", "bookworm", str(target)], timeout=900)
    # What the registry's slim image leaves out too: downloaded packages and package lists.
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (target / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    tar = subprocess.Popen(["tar", "-C", str(target), "-c", "."], stdout=subprocess.PIPE)
    sh_in = subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    tar.wait(timeout=60)
    assert sh_in.returncode == 0 and tar.returncode == 0, sh_in.stderr
    shutil.rmtree(target, ignore_errors=True)
    return "made with debootstrap"


def build_ca_certs() -> str:
    return "".join(p.read_text() for p in sorted(LOCAL_CAS.glob("*.crt")))


@dataclass
class Stack:
    """One compose project: `compose(...)` runs docker-compose on the repository's file (plus
    `overrides`) with exactly `env` as its settings: nothing of this machine's KVMSUP_*, no
    `.env` of the checkout."""

    project: str
    work: Path
    env: dict[str, str] = field(default_factory=dict)
    overrides: list[Path] = field(default_factory=list)

    def compose(self, *args: str, timeout: float = 300, check: bool = True
                ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        empty = self.work / "empty.env"
        empty.touch()
        files = ["-f", str(COMPOSE_FILE)]
        for extra in self.overrides:
            files += ["-f", str(extra)]
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("KVMSUP_", "COMPOSE_"))}
        cmd = ["docker-compose", "-p", self.project, "--project-directory", str(ROOT),
               "--env-file", str(empty), *files, *args]  # fmt: skip
        return sh(cmd, timeout=timeout, env={**clean, **self.env}, check=check)

    def container(self, service: str) -> str:
        cid = self.compose("ps", "-q", service).stdout.strip()
        assert cid, f"{service} has no container"
        return cid

    def inspect(self, service: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(
            sh(["docker", "inspect", self.container(service)]).stdout
        )
        return data[0]

    def logs(self, service: str) -> str:
        out = self.compose("logs", "--no-color", service, check=False)
        return out.stdout + out.stderr

    def exec(self, service: str, *args: str) -> str:
        return sh(["docker", "exec", self.container(service), *args]).stdout

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", timeout=180, check=False)


def image_sizes(project: str) -> dict[str, int]:
    """Bytes of each service's image, as `docker image inspect` counts them."""
    sizes = {}
    for service in ("broker", "gateway", "agent"):
        out = sh(["docker", "image", "inspect", f"{project}_{service}", "--format", "{{.Size}}"])
        sizes[service] = int(out.stdout.strip())
    return sizes
