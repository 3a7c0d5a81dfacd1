"""A private libvirtd + virtlogd (root, own mount namespace) for the e2e tests; CLI up|down|status.

Why a private daemon and not the system one: the fault tests kill -9, restart and SIGSTOP
libvirtd, so the daemon must be ours, and several sessions (developers, CI) share this machine.
libvirtd running as root has its qemu driver paths compiled in (/etc/libvirt, /run/libvirt,
/var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt, /run/libvirtd.pid): `-f` only moves
libvirtd.conf, and there is no environment override for a privileged daemon. So a small holder
process (`_hold`) enters a private mount namespace (`unshare -m`), bind-mounts a per-environment
directory over each of those paths, and runs virtlogd and libvirtd as its children. Clients
outside the namespace reach the daemon through the real path of the bind-mounted socket:
`qemu:///system?socket=<root>/run/libvirt-sock` -- the ordinary system driver, nothing embedded.
In a chroot, whose / is no mount point, `unshare` cannot make / private; the holder then makes
the mounts it can see private and refuses to go on if its bind mounts would still leak out.

The holder is also a child subreaper: QEMU is daemonised (double fork), so its parent is PID 1,
and PID 1 on this machine (firecracker's process_api) reaps orphans only about once a second.
libvirt waits for a destroyed QEMU's pid to vanish (`kill(pid, 0)`), so every `virsh destroy`
took ~2 s; with the holder reaping within 50 ms it takes ~0.2 s, and the STOPPED event is prompt.

Other facts of this machine handled here: libvirtd refuses to start without a `libvirt-qemu`
user (the namespace gets its own passwd/group with one; qemu.conf still runs QEMU as root), and
QEMU cannot start a guest unless virtlogd runs (the holder starts it first and waits for its
socket). The QEMU capability cache (/var/cache/libvirt) is shared between environments.

Set KVMSUP_E2E_LIBVIRT_URI to use an existing libvirtd instead (faults are then unavailable).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
APT_PACKAGES = (
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    "qemu-system-x86",
    "libvirt-clients",
)
CLI_DIR = Path("/run/kvmsup-e2e")
# The QEMU capabilities cache is shared between environments: probing costs ~4 s per daemon.
CACHE_DIR = Path("/var/cache/kvmsup-e2e")
# (directory inside the environment, the compiled-in path it hides inside the namespace)
BIND_DIRS = (
    ("etc", "/etc/libvirt"),
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("log", "/var/log/libvirt"),
)
QEMU_USER = "libvirt-qemu"
KVM_GET_API_VERSION = 0xAE00
PR_SET_CHILD_SUBREAPER = 36

LIBVIRTD_CONF = """\
# Private test daemon: root-only sockets, no auth (the socket directory is 0700).
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:stderr"
"""
QEMU_CONF = """\
# QEMU runs as root: the test images live in a private temporary directory.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
# No private mount namespace per QEMU: inside a chroot or a container (many CI runners)
# libvirt cannot build QEMU's own /dev, and every guest then fails at start, with "Failed to
# open /dev/null for OFD lock probing" or, when / is no mount point, "Failed disable mount
# propagation out of the root filesystem". QEMU sees the daemon's /dev instead.
namespaces = []
"""


class LibvirtUnavailable(RuntimeError):
    """libvirtd/QEMU cannot run here; the message says why and what to install."""


class NotOwned(RuntimeError):
    """A fault was requested on a libvirtd this process did not start."""


def kvm_usable() -> bool:
    """True when /dev/kvm opens read-write and answers KVM_GET_API_VERSION (12)."""
    if os.environ.get("KVMSUP_E2E_ACCEL", "").lower() == "tcg":
        return False
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION) == 12
    except OSError:
        return False
    finally:
        os.close(fd)


def _mountinfo() -> list[list[str]]:
    """/proc/self/mountinfo split into fields: [4] the mount point, [6:] optional tags."""
    rows = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for fields in rows:  # the kernel writes a space in a path as \040, and so on
        fields[4] = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
    return rows


def root_is_mountpoint() -> bool:
    """False in a plain chroot: its / is a directory of a mount this process cannot see."""
    return any(fields[4] == "/" for fields in _mountinfo())


def _shared(target: Path) -> bool:
    """True when the mount on `target` is shared, i.e. a peer of mounts in other namespaces."""
    tags: list[str] = []
    for fields in _mountinfo():
        if fields[4] == str(target):
            tags = fields[6 : fields.index("-")]  # the last mount on a path is the top one
    return any(tag.startswith("shared:") for tag in tags)


def check_prerequisites() -> None:
    """Raise LibvirtUnavailable with the missing piece (root, binaries) named."""
    if os.geteuid() != 0:
        raise LibvirtUnavailable("the e2e tier runs libvirtd as root; run the tests as root")
    missing = [
        b
        for b in ("libvirtd", "virtlogd", "qemu-system-x86_64", "unshare")
        if not (shutil.which(b) or Path(f"/usr/sbin/{b}").exists())
    ]
    if missing:
        raise LibvirtUnavailable(
            f"missing {', '.join(missing)}: apt-get install -y {' '.join(APT_PACKAGES)}"
        )
    try:
        import libvirt  # noqa: F401
    except ImportError as exc:
        raise LibvirtUnavailable("libvirt-python is not installed in this venv") from exc


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def proc_state(pid: int) -> str:
    """The one-letter state of a process (R, S, T for stopped, Z...), '' when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class Libvirtd:
    """One test environment: its directory, URI, holder and daemons; faults for the tests."""

    def __init__(self, root: Path | None = None, uri: str | None = None) -> None:
        self.external_uri = uri
        self.root = root or Path(tempfile.mkdtemp(prefix="kvs-", dir="/tmp"))
        self.started_in: float | None = None
        self.started = False  # True when up() started the daemons (so down() is ours to call)
        self._popen: subprocess.Popen[bytes] | None = None

    # ---- paths and facts -------------------------------------------------------------
    @property
    def owned(self) -> bool:
        return self.external_uri is None

    @property
    def uri(self) -> str:
        return self.external_uri or f"qemu:///system?socket={self.root / 'run' / 'libvirt-sock'}"

    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt-sock"

    @property
    def holder_pid(self) -> int | None:
        return _read_pid(self.root / "holder.pid")

    @property
    def pid(self) -> int:
        """The running libvirtd's pid (changes on restart)."""
        pid = _read_pid(self.root / "libvirtd.pid")
        if not self.owned or pid is None:
            raise NotOwned(f"no libvirtd of ours in {self.root}")
        return pid

    @property
    def log(self) -> Path:
        return self.root / "libvirtd.log"

    @property
    def accel(self) -> str:
        """'kvm' or 'tcg': what the guests of this environment use."""
        return "kvm" if kvm_usable() and self._libvirt_has_kvm() else "tcg"

    def _libvirt_has_kvm(self) -> bool:
        import libvirt

        conn = libvirt.open(self.uri)
        try:
            conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
            return True
        except libvirt.libvirtError:
            return False
        finally:
            conn.close()

    def running(self) -> bool:
        return _alive(self.holder_pid) and _alive(_read_pid(self.root / "libvirtd.pid"))

    def status(self) -> dict[str, Any]:
        up = self.running() if self.owned else self._connects()
        return {
            "up": up,
            "uri": self.uri,
            "root": str(self.root),
            "owned": self.owned,
            "holder_pid": self.holder_pid,
            "libvirtd_pid": _read_pid(self.root / "libvirtd.pid"),
            "virtlogd_pid": _read_pid(self.root / "virtlogd.pid"),
            "accel": self.accel if up else None,
        }

    def log_tail(self, chars: int = 3000) -> str:
        texts = []
        for name in ("holder.log", "libvirtd.log", "virtlogd.log"):
            path = self.root / name
            if path.exists():
                texts.append(f"--- {name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(texts)

    # ---- lifecycle ---------------------------------------------------------------------
    def up(self, timeout: float = 60.0, owner: int | None = None) -> Libvirtd:
        """Start the holder (and so virtlogd + libvirtd) unless it runs; wait until usable.

        With `owner` (a pid), the holder tears everything down when that process dies, so a
        test run killed with -9 leaves no daemons or guests behind.
        """
        t0 = time.monotonic()
        if not self.owned:
            check_prerequisites()
            if not self._connects():
                raise LibvirtUnavailable(f"cannot connect to {self.uri}")
            return self
        if self.running():
            return self
        check_prerequisites()
        self._write_config()
        with (self.root / "holder.log").open("ab") as log:
            proc = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    # In a chroot / is no mount point and unshare cannot make it private; the
                    # holder then makes each mount it can see private and checks its own.
                    "private" if root_is_mountpoint() else "unchanged",
                    sys.executable,
                    "-m",
                    "tests.support.libvirtd",
                    "_hold",
                    str(self.root),
                    *(["--owner", str(owner)] if owner else []),
                ],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C of the test run must not kill the daemons
            )
        # `unshare` without --fork execs the holder: same pid.
        (self.root / "holder.pid").write_text(f"{proc.pid}\n")
        self._popen = proc  # reaped by down()
        self.started = True
        self._wait_ready(None, timeout, lambda: proc.poll() is None)
        self.started_in = time.monotonic() - t0
        return self

    def down(self, timeout: float = 20.0) -> None:
        """Destroy every guest of this private daemon, then stop the daemons and the holder."""
        if not self.owned:
            return
        holder = self.holder_pid
        if not _alive(holder):
            return
        assert holder is not None
        with contextlib.suppress(Exception):
            self.cont()
            self._destroy_all()
        os.kill(holder, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(holder) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(holder):
            os.kill(holder, signal.SIGKILL)
        if self._popen is not None:
            self._popen.wait(timeout=5)
        for name in ("holder.pid", "libvirtd.pid", "virtlogd.pid"):
            (self.root / name).unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete the environment's directory (after down), unless KVMSUP_E2E_KEEP is set."""
        if not (self.owned and self.running()) and not os.environ.get("KVMSUP_E2E_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)

    # ---- faults (issue 4) ------------------------------------------------------------
    def kill9(self) -> int:
        """kill -9 libvirtd; the guests keep running. Returns the killed pid."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        return pid

    def restart(self, timeout: float = 30.0) -> int:
        """Start libvirtd again (after kill9) under the same holder; returns the new pid."""
        old = _read_pid(self.root / "libvirtd.pid")
        if _alive(old):
            raise RuntimeError(f"libvirtd {old} still runs; kill9() it first")
        holder = self.holder_pid
        if not self.owned or not _alive(holder):
            raise NotOwned("no holder of ours to restart libvirtd")
        assert holder is not None
        os.kill(holder, signal.SIGUSR1)
        self._wait_ready(old, timeout, lambda: _alive(holder))
        return self.pid

    def stop(self) -> None:
        """SIGSTOP libvirtd: it keeps its sockets but answers nothing. Returns once stopped."""
        pid = self.pid
        os.kill(pid, signal.SIGSTOP)
        # The group stop lands when the kernel next schedules the threads: not synchronous.
        deadline = time.monotonic() + 5
        while proc_state(pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.005)

    def cont(self) -> None:
        if self.owned and _alive(_read_pid(self.root / "libvirtd.pid")):
            os.kill(self.pid, signal.SIGCONT)

    def heal(self) -> None:
        """After a fault test: SIGCONT a stopped libvirtd, restart a killed one."""
        if not self.owned:
            return
        pid = _read_pid(self.root / "libvirtd.pid")
        if _alive(pid):
            self.cont()
        else:
            self.restart()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[int]:
        """SIGSTOP libvirtd for the block; SIGCONT even when the block fails."""
        self.stop()
        try:
            yield self.pid
        finally:
            self.cont()

    # ---- internals ---------------------------------------------------------------------
    def _write_config(self) -> None:
        for sub, _ in BIND_DIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "images").mkdir(exist_ok=True)
        (self.root / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF)
        (self.root / "etc" / "qemu.conf").write_text(QEMU_CONF)
        (self.root / "etc" / "virtlogd.conf").write_text('log_outputs = "3:stderr"\n')

    def _connects(self) -> bool:
        import libvirt

        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError:
            return False
        conn.close()
        return True

    def _wait_ready(self, old_pid: int | None, timeout: float, holder_ok: Any) -> None:
        import libvirt

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not holder_ok():
                raise LibvirtUnavailable(f"the libvirtd holder exited\n{self.log_tail()}")
            pid = _read_pid(self.root / "libvirtd.pid")
            if pid and pid != old_pid and _alive(pid) and self.socket.exists():
                try:
                    conn = libvirt.open(self.uri)
                except libvirt.libvirtError:
                    pass
                else:
                    try:
                        conn.getCapabilities()  # waits for the QEMU capability probe
                        return
                    finally:
                        conn.close()
            time.sleep(0.05)
        raise LibvirtUnavailable(f"libvirtd not ready after {timeout}s\n{self.log_tail()}")

    def _destroy_all(self) -> None:
        import libvirt

        conn = libvirt.open(self.uri)
        try:
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
        finally:
            conn.close()


def from_environment() -> Libvirtd:
    """The environment the tests use: KVMSUP_E2E_LIBVIRT_URI, KVMSUP_E2E_DIR, or a fresh one."""
    uri = os.environ.get("KVMSUP_E2E_LIBVIRT_URI")
    if uri:
        root = Path(tempfile.mkdtemp(prefix="kvs-", dir="/tmp"))
        root.chmod(0o755)  # a foreign daemon may run QEMU as an unprivileged user
        return Libvirtd(root, uri=uri)
    shared = os.environ.get("KVMSUP_E2E_DIR")
    if shared:
        Path(shared).mkdir(parents=True, exist_ok=True)
        return Libvirtd(Path(shared))
    return Libvirtd()


# ---- the holder: runs inside the private mount namespace ---------------------------------
def _hold(root: Path, owner: int | None = None) -> None:
    """Bind-mount the environment, run virtlogd + libvirtd, reap orphans, obey signals.

    SIGUSR1 starts libvirtd again when it is not running; SIGTERM, or the death of `owner`,
    stops everything.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    mounts = [(root / sub, Path(target)) for sub, target in BIND_DIRS]
    mounts.append((CACHE_DIR, Path("/var/cache/libvirt")))
    mounts += _private_passwd(root)
    if not root_is_mountpoint():
        # A chroot: `unshare` left propagation alone. Whatever is mounted under a visible
        # mount stays here once that mount is private; under the invisible root it stays
        # here only if that root is private too, which the first bind mount shows.
        for fields in _mountinfo():
            subprocess.run(["mount", "--make-private", fields[4]], check=True)
    for source, target in mounts:
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)  # a mount point on the host; left empty
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
        if _shared(target):
            subprocess.run(["umount", str(target)], check=True)  # the umount propagates too
            raise SystemExit(
                f"holder: {target} would be mounted outside this mount namespace too: / is"
                " no mount point here and its mount is shared; make the root a private mount"
                " point (mount --bind DIR DIR && mount --make-private DIR) before chroot DIR"
            )

    flags = {"stop": False, "start": False}

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGUSR1:
            flags["start"] = True
        elif signum in (signal.SIGTERM, signal.SIGINT):
            flags["stop"] = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the sleep below

    # Pid files must leave the compiled-in /run/libvirtd.pid and /run/virtlogd.pid alone:
    # a second daemon (the system one, another session) locks those.
    virtlogd = _spawn(
        root,
        "virtlogd",
        ["virtlogd", "-f", "/etc/libvirt/virtlogd.conf", "-p", str(root / "virtlogd.pid")],
    )
    _wait_path(root / "run" / "virtlogd-sock", 10)  # QEMU's stdio goes through it
    libvirtd = _start_libvirtd(root)
    print(f"holder {os.getpid()}: virtlogd {virtlogd} libvirtd {libvirtd}", flush=True)
    while not flags["stop"]:
        if owner and not _alive(owner):
            print(f"holder: owner {owner} is gone, stopping", flush=True)
            break
        _reap(libvirtd)
        if flags["start"]:
            flags["start"] = False
            if not _alive(libvirtd):
                libvirtd = _start_libvirtd(root)
                print(f"holder: libvirtd restarted as {libvirtd}", flush=True)
        time.sleep(0.05)
    _shutdown(libvirtd, virtlogd)


def _private_passwd(root: Path) -> list[tuple[Path, Path]]:
    # libvirtd resolves the compiled-in QEMU user (libvirt-qemu on Debian) before it reads
    # qemu.conf, and fails without it even with user = "root" there. Rather than adding a
    # system user, give the namespace copies of passwd/group that have it.
    import grp
    import pwd

    try:
        pwd.getpwnam(QEMU_USER)
        grp.getgrnam(QEMU_USER)
        return []
    except KeyError:
        pass
    passwd, group = root / "passwd", root / "group"
    passwd.write_text(
        Path("/etc/passwd").read_text()
        + f"{QEMU_USER}:x:64055:64055::/var/lib/libvirt:/usr/sbin/nologin\n"
    )
    group.write_text(Path("/etc/group").read_text() + f"{QEMU_USER}:x:64055:\n")
    return [(passwd, Path("/etc/passwd")), (group, Path("/etc/group"))]


def _spawn(root: Path, name: str, args: list[str]) -> int:
    with (root / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    return proc.pid


def _start_libvirtd(root: Path) -> int:
    pidfile = root / "libvirtd.pid"
    pidfile.unlink(missing_ok=True)
    return _spawn(
        root, "libvirtd", ["libvirtd", "-f", "/etc/libvirt/libvirtd.conf", "-p", str(pidfile)]
    )


def _reap(libvirtd: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == libvirtd:
            print(f"holder: libvirtd {pid} exited, status {status:#x}", flush=True)


def _children() -> list[int]:
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == me:
                found.append(int(entry.name))
    return found


def _shutdown(libvirtd: int, virtlogd: int) -> None:
    for pid in (libvirtd, virtlogd):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (_alive(libvirtd) or _alive(virtlogd)):
        _reap(libvirtd)
        time.sleep(0.05)
    # Whatever is left (QEMU orphans adopted by us, a daemon that ignored SIGTERM) dies now.
    for pid in _children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _children() and time.monotonic() < deadline:
        _reap(libvirtd)
        time.sleep(0.05)
    print("holder: stopped", flush=True)


def _wait_path(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.02)


# ---- CLI (make e2e-env) ------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.libvirtd", description="A private libvirtd for the e2e tests."
    )
    parser.add_argument("action", choices=["up", "down", "status", "_hold"])
    parser.add_argument("root", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--owner", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("KVMSUP_E2E_DIR", CLI_DIR)),
        help=f"environment directory (default {CLI_DIR}, or $KVMSUP_E2E_DIR)",
    )
    args = parser.parse_args(argv)
    if args.action == "_hold":
        _hold(Path(args.root), args.owner)
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    env = Libvirtd(args.dir)
    if args.action == "up":
        try:
            env.up()
        except LibvirtUnavailable as exc:
            print(f"e2e-env: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({**env.status(), "started_in_s": env.started_in}, indent=2))
        print(
            f"\nexport KVMSUP_E2E_DIR={env.root}   # tests reuse this daemon\n"
            f"virsh -c '{env.uri}' list --all",
            file=sys.stderr,
        )
    elif args.action == "down":
        env.down()
        print(json.dumps(env.status(), indent=2))
    else:
        status = env.status()
        print(json.dumps(status, indent=2))
        return 0 if status["up"] else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
