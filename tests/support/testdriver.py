"""libvirt's test driver served by a private libvirtd, so tests and agents share one state.

In-process `test:///` state is private to each process; through libvirtd (`test+unix://`) a test
can change VMs behind the agent's back (undefine, rename, start) and the agent sees the events.
The daemon gets a private socket directory and an empty driver directory: the test driver is
built into libvirtd, and skipping the QEMU driver lets it start without a libvirt-qemu user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def _answers(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


class TestDriverDaemon:
    """A libvirtd of our own; `uri(node_file)` names a shared test-driver node through it."""

    __test__ = False  # not a pytest test class

    def __init__(self, workdir: Path, socket_group: str | None = None) -> None:
        self.workdir = workdir
        # Set: the socket is rw for that group only (0770), as libvirtd's packaged config makes
        # it for `libvirt`; the container tier's agent reaches it through that group's id.
        self.socket_group = socket_group
        self.sock_dir = workdir / "libvirt-run"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.sock_dir / "libvirt-sock"

    def uri(self, node_file: Path) -> str:
        return f"test+unix://{node_file}?socket={self.socket}"

    def start(self) -> None:
        binary = shutil.which("libvirtd") or "/usr/sbin/libvirtd"
        if not Path(binary).exists():
            raise RuntimeError("libvirtd is not installed: run `make install` as root")
        (self.workdir / "drivers").mkdir(exist_ok=True)
        self.sock_dir.mkdir(exist_ok=True)
        conf = self.workdir / "libvirtd.conf"
        text = f'unix_sock_dir = "{self.sock_dir}"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
        if self.socket_group is not None:
            text += f'unix_sock_group = "{self.socket_group}"\nunix_sock_rw_perms = "0770"\n'
        conf.write_text(text)
        with (self.workdir / "libvirtd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-f", str(conf), "-p", str(self.workdir / "libvirtd.pid")],
                env={**os.environ, "LIBVIRT_DRIVER_DIR": str(self.workdir / "drivers")},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while not _answers(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.workdir / "libvirtd.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"libvirtd could not be started: {tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
