"""The e2e tier's Linux guest with a guest agent: Debian's `qemu-guest-agent` and the shared
libraries it needs in the initramfs of tests/support/linuxguest.py's guest, its virtio console
channel, a static address from the documentation range on its NIC (no traffic is sent to it or
from it), and a small ext2 disk mounted at /data.

Its console says what the guest itself sees, for the test to compare with what the agent
reports, once at boot and again every second:

    KVS hostname <hostname>
    KVS os NAME="Debian GNU/Linux"
    KVS df <1K-blocks> <used> <available> /data     (busybox `df -k`)

Taking the NIC's link down from the host (libvirt's `<link state='down'/>`) makes the guest
kill its guest agent and print `KVS ga killed`: the host has no shell in the guest, and the
link state is a signal that carries no traffic.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.linuxguest import (
    BOOT_MARK,
    BUSYBOX,
    MODULES,
    Cpio,
    Kernel,
    LinuxGuestUnavailable,
    module_order,
)

QEMU_GA = Path("/usr/sbin/qemu-ga")
CHANNEL = "org.qemu.guest_agent.0"
HOSTNAME = "kvs-agent-guest"
ADDRESS = "192.0.2.10"  # TEST-NET-1 (RFC 5737): never routed
PREFIX = 24
DATA_BYTES = 8 << 20
FILLER_KIB = 1536  # written to /data at boot, so the used figure is more than the metadata
AGENT_MODULES = (*MODULES, "virtio_console")
DF = re.compile(r"KVS df (?P<size>\d+) (?P<used>\d+) (?P<avail>\d+) /data")

INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /var/run /data
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "{BOOT_MARK} $(cut -d' ' -f1 /proc/uptime)"
while read -r mod; do insmod "/lib/modules/$mod"; done < /modules.load
hostname {HOSTNAME}
echo 0 > /proc/sys/net/ipv6/conf/default/router_solicitations
echo 0 > /proc/sys/net/ipv6/conf/eth0/router_solicitations
ip link set lo up
ip addr add {ADDRESS}/{PREFIX} dev eth0
ip link set eth0 up
mount -t ext2 /dev/vdb /data
dd if=/dev/zero of=/data/filler bs=1024 count={FILLER_KIB} 2>/dev/null
sync
port=""
for p in /sys/class/virtio-ports/*; do
  [ "$(cat "$p/name" 2>/dev/null)" = "{CHANNEL}" ] && port="/dev/$(basename "$p")"
done
/usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /tmp &
echo "KVS ga started on $port"
killed=0
while :; do
  echo "KVS hostname $(hostname)"
  echo "KVS os $(grep '^NAME=' /etc/os-release)"
  set -- $(df -k /data | tail -n 1)
  echo "KVS df $2 $3 $4 /data"
  if [ $killed = 0 ] && [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 0 ]; then
    kill -9 $(pidof qemu-ga)
    sleep 0.2
    [ -z "$(pidof qemu-ga)" ] && killed=1 && echo "KVS ga killed"
  fi
  echo "KVS ga pids $(pidof qemu-ga)"
  sleep 1
done
"""


def _libraries(binary: Path) -> list[Path]:
    """The shared libraries `binary` loads (ldd), the dynamic loader included."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True)
    found = []
    for line in out.stdout.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            found.append(Path(m.group(1)))
    return found


def build_agent_initramfs(kernel: Kernel, dest: Path) -> Path:
    """The guest's initramfs (gzip'd cpio) with busybox, its modules and qemu-ga."""
    if not QEMU_GA.exists():
        raise LinuxGuestUnavailable("no guest agent: apt-get install -y qemu-guest-agent")
    order = module_order(kernel.modules, AGENT_MODULES)
    if any(not p.endswith(".ko") for p in order):
        raise LinuxGuestUnavailable(f"compressed modules in {kernel.modules}: {order}")
    cpio = Cpio()
    made: set[str] = set()

    def parents(path: str) -> None:
        parts = Path(path).parts
        for i in range(1, len(parts)):
            sub = "/".join(parts[:i])
            if sub not in made:
                made.add(sub)
                cpio.dir(sub)

    for d in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "usr", "usr/sbin"):
        parents(d + "/x")
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    cpio.file("init", INIT.encode(), 0o755)
    cpio.file("etc/os-release", Path("/etc/os-release").resolve().read_bytes())
    cpio.file("usr/sbin/qemu-ga", QEMU_GA.read_bytes(), 0o755)
    for lib in _libraries(QEMU_GA):
        rel = str(lib).lstrip("/")
        parents(rel)
        cpio.file(rel, lib.resolve().read_bytes(), 0o755)
    for path in order:
        parents(f"lib/modules/{path}")
        cpio.file(f"lib/modules/{path}", (kernel.modules / path).read_bytes())
    cpio.file("modules.load", "".join(f"{p}\n" for p in order).encode())
    dest.write_bytes(gzip.compress(cpio.finish(), compresslevel=1))
    return dest


def make_data_disk(path: Path) -> Path:
    """A small ext2 image with no blocks reserved for root, so `df`'s size is used + available
    (the figure the guest agent reports as the total)."""
    mkfs = shutil.which("mkfs.ext2") or "/usr/sbin/mkfs.ext2"
    with path.open("wb") as f:
        f.truncate(DATA_BYTES)
    subprocess.run([mkfs, "-q", "-F", "-m", "0", "-L", "kvsdata", str(path)], check=True)
    return path


def agent_devices(data_disk: Path) -> str:
    """The devices added to the Linux guest's domain: the data disk and the agent's channel."""
    return f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{data_disk}'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <channel type='unix'>
      <target type='virtio' name='{CHANNEL}'/>
    </channel>"""
