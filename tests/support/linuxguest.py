"""A tiny Linux guest for the e2e tier, built offline from the Debian packages `make install` adds.

The distribution kernel (linux-image-cloud-amd64, or any /boot/vmlinuz-* whose modules are in
/lib/modules) is booted directly by libvirt, unpacked to its ELF vmlinux when it has a PVH entry
(see `extract_pvh`); the initramfs is written here, in Python, as a
gzip'd newc cpio holding busybox-static, the virtio modules (with their dependencies from
modules.dep) and an init script. The init answers the ACPI power button (busybox acpid → a
`poweroff -f` after a sync: nothing is mounted from a disk, so that is a clean power-off), and
once a second writes one line on the serial console, which libvirt appends to a file:

    KVS tick up=<uptime s> mem_total_kib=<MemTotal> mem_available_kib=<MemAvailable>
        tx_bytes=<eth0 tx_bytes>

Its NIC traffic is ping6 to a link-scope multicast group out of eth0's link-local address, for
a fixed count: it never leaves the tap and aims at no routable address. It stops so that the
counters then hold still and can be compared exactly.
"""

from __future__ import annotations

import gzip
import io
import logging
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEB_PACKAGES = ("linux-image-cloud-amd64", "busybox-static", "lz4")
BUSYBOX = Path("/bin/busybox")
MODULES_ROOT = Path("/lib/modules")
# What the guest needs: the virtio PCI transport, its disk, NIC and balloon, and the ACPI power
# button with the evdev node acpid reads it from.
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "virtio_balloon", "button", "evdev")
BOOT_MARK = "KVS boot"
PANIC = "Kernel panic - not syncing"
TICK = re.compile(
    r"KVS tick up=(?P<up>[\d.]+) mem_total_kib=(?P<total>\d+)"
    r" mem_available_kib=(?P<avail>\d+) tx_bytes=(?P<tx>\d+)"
)
# The ping6 traffic: PING_COUNT packets of PING_SIZE data bytes, one every PING_INTERVAL s, to
# a link-scope multicast group nobody joins: it stays on the tap, and no host answers it, so
# what the guest sends (tx) and what it receives (rx) cannot be mistaken for each other.
PING_GROUP = "ff02::6b76:7331"
PING_COUNT = 40
PING_SIZE = 1000
PING_INTERVAL = 0.25
# One echo request on the wire: Ethernet 14 + IPv6 40 + ICMPv6 8 + data.
PING_FRAME_BYTES = 14 + 40 + 8 + PING_SIZE

INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /var/run /etc/acpi/PWRF
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "{BOOT_MARK} $(cut -d' ' -f1 /proc/uptime)"
while read -r mod; do insmod "/lib/modules/$mod"; done < /modules.load
# Only the traffic the test asks for: no router solicitations, nothing else periodic.
echo 0 > /proc/sys/net/ipv6/conf/default/router_solicitations
echo 0 > /proc/sys/net/ipv6/conf/eth0/router_solicitations
ip link set lo up
ip link set eth0 up
acpid -c /etc/acpi -l /tmp/acpid.log
# eth0's link-local address needs its duplicate address detection first.
n=0
while [ $n -lt 50 ]; do
  a=$(ip -6 addr show dev eth0 scope link)
  case "$a" in *inet6*) case "$a" in *tentative*) ;; *) break ;; esac ;; esac
  n=$((n+1)); sleep 0.1
done
echo "KVS net up"
(sleep 1
 ping6 -q -I eth0 -c {PING_COUNT} -s {PING_SIZE} -i {PING_INTERVAL} -W 1 {PING_GROUP} \\
   >/dev/null 2>&1
 echo "KVS traffic done") &
while :; do
  set -- $(grep -E '^(MemTotal|MemAvailable):' /proc/meminfo)
  echo "KVS tick up=$(cut -d' ' -f1 /proc/uptime) mem_total_kib=$2 mem_available_kib=$5" \\
    "tx_bytes=$(cat /sys/class/net/eth0/statistics/tx_bytes)"
  sleep 1
done
"""
POWER_BUTTON = """#!/bin/sh
echo "KVS power button" > /dev/console
sync
poweroff -f
"""


# XEN_ELFNOTE_PHYS32_ENTRY: the kernel's 32-bit PVH entry point, which QEMU boots an ELF through.
PVH_NOTE = 18


class LinuxGuestUnavailable(RuntimeError):
    """No kernel or busybox here; the message names the packages to install."""


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path
    modules: Path


def find_kernel() -> Kernel:
    """The newest /boot/vmlinuz-<v> that has /lib/modules/<v>/modules.dep (a cloud one first)."""
    found = []
    for image in Path("/boot").glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        if (MODULES_ROOT / version / "modules.dep").exists() and os.access(image, os.R_OK):
            found.append(Kernel(version, image, MODULES_ROOT / version))
    if not found or not BUSYBOX.exists():
        raise LinuxGuestUnavailable(
            "no Debian kernel with modules or no busybox: apt-get install -y "
            + " ".join(DEB_PACKAGES)
        )
    found.sort(key=lambda k: ("cloud" in k.version, k.image.stat().st_mtime))
    return found[-1]


def extract_pvh(bzimage: Path, dest: Path) -> Path | None:
    """The uncompressed kernel (vmlinux) of a bzImage, written to `dest`, if QEMU can boot it.

    Why: under TCG, the bzImage's own decompressor is slow, and after a reset it took ~20-70 s
    on a busy host (a reboot then costs more than a cold boot). QEMU boots an ELF vmlinux with a
    PVH entry note directly, skipping it: a reboot then takes as long as a cold boot. Returns None
    (boot the bzImage) when the payload's compression has no decompressor here or the kernel has
    no PVH entry.
    """
    data = bzimage.read_bytes()
    try:
        setup_sects = data[0x1F1] or 4
        offset, length = struct.unpack_from("<II", data, 0x248)  # boot protocol >= 2.08
    except (IndexError, struct.error):
        return None
    payload = data[(setup_sects + 1) * 512 + offset :][:length]
    try:
        if payload.startswith(b"\x1f\x8b"):
            vmlinux = gzip.decompress(payload)
        elif payload.startswith(b"\xfd7zXZ"):
            vmlinux = lzma.decompress(payload)
        elif payload.startswith(b"\x02\x21\x4c\x18") and shutil.which("lz4"):
            # The kernel's LZ4 "legacy" frames: `lz4 -dc` reads them, stops at the size trailer
            # after them, and exits non-zero for it.
            out = subprocess.run(["lz4", "-dc"], input=payload, capture_output=True, timeout=60)
            vmlinux = out.stdout
        else:
            return None
    except (OSError, EOFError, lzma.LZMAError, subprocess.SubprocessError) as exc:
        logger.info("cannot decompress %s (%s): booting the bzImage", bzimage, exc)
        return None
    # The kernel's build appends the uncompressed size to the payload: a whole kernel or none.
    if len(vmlinux) != struct.unpack("<I", payload[-4:])[0] or not has_pvh_entry(vmlinux):
        return None
    dest.write_bytes(vmlinux)
    return dest


def has_pvh_entry(elf: bytes) -> bool:
    """True for a 64-bit little-endian ELF with a Xen PHYS32_ENTRY note in a PT_NOTE segment."""
    if elf[:6] != b"\x7fELF\x02\x01":
        return False
    phoff, phentsize, phnum = (
        struct.unpack_from("<Q", elf, 0x20)[0],
        *struct.unpack_from("<HH", elf, 0x36),
    )
    for i in range(phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == PVH_NOTE:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def module_order(modules_dir: Path, wanted: tuple[str, ...] = MODULES) -> list[str]:
    """Paths (relative to modules_dir) of `wanted` and their dependencies, dependencies first.

    A module built into the kernel has no line in modules.dep and needs nothing loaded.
    """
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        name = Path(path).name.split(".ko")[0].replace("-", "_")
        by_name[name] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name in by_name:
            visit(by_name[name])
    return order


class Cpio:
    """A newc ("070701") archive, the format the kernel unpacks as an initramfs."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out.write(header + name.encode() + b"\0")
        self.out.write(b"\0" * (-(len(header) + len(name) + 1) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def build_initramfs(kernel: Kernel, dest: Path) -> Path:
    """Write the guest's initramfs (gzip'd cpio) to `dest`; returns it."""
    order = module_order(kernel.modules)
    missing = {"virtio_net", "virtio_balloon"} - {Path(p).name.split(".ko")[0] for p in order}
    if missing and not _built_in(kernel, missing):
        raise LinuxGuestUnavailable(f"kernel {kernel.version} lacks {sorted(missing)}")
    if any(not p.endswith(".ko") for p in order):
        # busybox insmod reads plain .ko files; Debian's 6.1 kernels ship them uncompressed.
        raise LinuxGuestUnavailable(f"compressed modules in {kernel.modules}: {order}")
    cpio = Cpio()
    for d in ("bin", "dev", "etc", "etc/acpi", "etc/acpi/PWRF", "lib", "lib/modules", "proc"):
        cpio.dir(d)
    cpio.dir("sys")
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    cpio.file("init", INIT.encode(), 0o755)
    # busybox acpid runs `<confdir>/PWRF/00000080` on the power button.
    cpio.file("etc/acpi/PWRF/00000080", POWER_BUTTON.encode(), 0o755)
    made = set()
    for path in order:
        parts = Path(path).parts
        for i in range(1, len(parts)):
            sub = "lib/modules/" + "/".join(parts[:i])
            if sub not in made:
                made.add(sub)
                cpio.dir(sub)
        cpio.file(f"lib/modules/{path}", (kernel.modules / path).read_bytes())
    cpio.file("modules.load", "".join(f"{p}\n" for p in order).encode())
    dest.write_bytes(gzip.compress(cpio.finish(), compresslevel=1))
    return dest


def _built_in(kernel: Kernel, names: set[str]) -> bool:
    builtin = kernel.modules / "modules.builtin"
    if not builtin.exists():
        return False
    have = {Path(p).name.split(".ko")[0] for p in builtin.read_text().split()}
    return names <= have


@dataclass(frozen=True)
class ConsoleLine:
    at: float  # host monotonic time the line was first seen
    text: str


class Console:
    """Follows a serial console file; every line is stamped with when the test first saw it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[ConsoleLine] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[ConsoleLine]:
        """Read what is new; returns the new complete lines."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        now = time.monotonic()
        new = [ConsoleLine(now, raw.decode(errors="replace").rstrip("\r")) for raw in complete]
        self.lines.extend(new)
        return new

    def wait_for(self, pattern: str, timeout: float, since: float = 0.0) -> ConsoleLine:
        """The first line containing `pattern` seen at or after `since` (monotonic).

        A kernel panic after `since` ends the wait at once: the line will never come."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            for line in self.lines:
                if line.at >= since and pattern in line.text:
                    return line
            panicked = any(ln.at >= since and PANIC in ln.text for ln in self.lines)
            if panicked or time.monotonic() > deadline:
                tail = "\n".join(x.text for x in self.lines[-15:])
                why = "the guest kernel panicked" if panicked else f"not in {timeout}s"
                raise TimeoutError(f"no {pattern!r} on {self.path}: {why}; tail:\n{tail}")
            time.sleep(0.05)

    def count(self, pattern: str) -> int:
        self.poll()
        return sum(pattern in line.text for line in self.lines)

    def ticks(self) -> list[tuple[float, dict[str, float]]]:
        """(seen at, {up, total, avail, tx}) of every tick line so far."""
        self.poll()
        out = []
        for line in self.lines:
            m = TICK.search(line.text)
            if m:
                out.append((line.at, {k: float(v) for k, v in m.groupdict().items()}))
        return out
