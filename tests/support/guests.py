"""Tiny guests for the e2e tests: boot sectors written as bytes, a small Linux, domain XML, cleanup.

No downloads and no assembler: a guest is SeaBIOS loading one 512-byte boot sector from a
virtio disk (so the disk has read bytes once it booted) and running it. Such a guest has no
ACPI handling, no balloon driver and no network stack: shutdown requests are ignored, balloon
stats never get fresh (memory falls back to rss) and the interface counts only host traffic.
Where those matter, `create_linux` boots the Debian kernel with a busybox initramfs instead
(tests/support/linuxguest.py).
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

from tests.support.linuxguest import (
    BOOT_MARK,
    Console,
    build_initramfs,
    extract_pvh,
    find_kernel,
)

Kind = Literal["idle", "spin"]

# sti; hlt; jmp short back to sti -- sleeps until the next timer interrupt, forever.
IDLE_CODE = bytes([0xFB, 0xF4, 0xEB, 0xFC])
# cli; jmp $ -- one vCPU at 100 %.
SPIN_CODE = bytes([0xFA, 0xEB, 0xFE])
CODE: dict[Kind, bytes] = {"idle": IDLE_CODE, "spin": SPIN_CODE}
IMAGE_BYTES = 1 << 20
MEMORY_MIB = 32
LINUX_MEMORY_MIB = 128
# Under KVM the kernel reaches its init in ~2 s; nested KVM on some hosts hangs a directly
# booted kernel silently right after decompression. No init within this many seconds: TCG.
LINUX_KVM_PROBE_S = 10.0
# Seconds a Linux guest may take to reach its init under TCG on a busy 2-core host (~7 s seen).
LINUX_BOOT_S = 90.0
# no_timer_check: the kernel's check that the IO-APIC timer ticks gives up too soon when a
# TCG vCPU gets little of a busy host, and panics ("IO-APIC + timer doesn't work!"): seen here
# on a reboot at load 18 on 2 cores.
LINUX_CMDLINE = "console=ttyS0 quiet loglevel=3 no_timer_check"


def boot_sector(code: bytes) -> bytes:
    """A 512-byte MBR: the code, zero padding, and the 0x55 0xAA signature the BIOS looks for."""
    if len(code) > 510:
        raise ValueError("boot code longer than 510 bytes")
    return code + bytes(510 - len(code)) + b"\x55\xaa"


def write_image(path: Path, kind: Kind, size: int = IMAGE_BYTES) -> Path:
    """A raw disk image (sparse past the boot sector)."""
    with path.open("wb") as f:
        f.write(boot_sector(CODE[kind]))
        f.truncate(size)
    return path


def domain_xml(
    name: str,
    uuid_: str,
    image: Path,
    tap: str,
    accel: str,
    memory_mib: int = MEMORY_MIB,
    *,
    boot: str = "<boot dev='hd'/>",
    cpu: str = "",
    serial: Path | None = None,
    disk_format: str = "raw",
) -> str:
    """1 vCPU, a virtio disk, a host tap (type='ethernet', libvirt creates it as root and
    removes it at stop; no bridge needed) and a virtio balloon; KVM or TCG ('qemu').

    `boot` holds the <os> children after <type> (a direct kernel boot for Linux), `serial` a
    file the guest's serial console is appended to, `disk_format` the image's (`qcow2` for
    internal snapshots)."""
    domain_type = "kvm" if accel == "kvm" else "qemu"
    console = (
        f"""
    <serial type='file'>
      <source path={quoteattr(str(serial))} append='on'/>
      <target port='0'/>
    </serial>"""
        if serial
        else ""
    )
    return f"""<domain type='{domain_type}'>
  <name>{escape(name)}</name>
  <uuid>{uuid_}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <currentMemory unit='MiB'>{memory_mib}</currentMemory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>{boot}</os>{cpu}
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{disk_format}'/>
      <source file={quoteattr(str(image))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='ethernet'>
      <target dev='{tap}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>{console}
    <controller type='usb' model='none'/>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


def linux_boot(kernel: Path, initrd: Path) -> str:
    return (
        f"<kernel>{escape(str(kernel))}</kernel><initrd>{escape(str(initrd))}</initrd>"
        f"<cmdline>{LINUX_CMDLINE}</cmdline>"
    )


def linux_cpu(accel: str) -> str:
    # TCG's default CPU model lacks what the Debian kernel is built for; KVM keeps QEMU's
    # default model (host-passthrough trips over MSRs nested KVM does not let it set).
    return "" if accel == "kvm" else "\n  <cpu mode='maximum'/>"


@dataclass(frozen=True)
class Guest:
    name: str
    uuid: str
    kind: Kind | Literal["linux"]
    image: Path
    tap: str


@dataclass(frozen=True)
class LinuxGuest(Guest):
    console: Console
    accel: str  # what it booted with: 'kvm' or 'tcg'
    boot_s: float  # from start to its init's first line


class Guests:
    """Defines (and starts) guests on one libvirt URI; `cleanup` destroys and undefines them.

    Names and tap devices carry a per-factory tag, so sessions sharing a host never collide.
    """

    def __init__(self, uri: str, workdir: Path, accel: str) -> None:
        self.uri = uri
        self.workdir = workdir
        self.accel = accel
        self.tag = uuid.uuid4().hex[:6]
        self.made: list[Guest] = []
        # Not len(made): a guest removed early would let the next one reuse a live one's tap.
        self._serial = itertools.count()
        workdir.mkdir(parents=True, exist_ok=True)
        # Linux guests: the kernel and initramfs (built once), the accelerator that boots them
        # (found by the first one) and how long finding it took.
        self._linux: tuple[Path, Path] | None = None  # the kernel QEMU boots, the initramfs
        self.linux_kernel: str | None = None  # 'pvh' (the ELF vmlinux) or 'bzImage'
        self.linux_accel: str | None = None
        self.linux_probe_s: float | None = None

    def create(self, kind: Kind, *, name: str | None = None, start: bool = True) -> Guest:
        """Write the image, define the domain, start it unless start=False."""
        import libvirt

        n = next(self._serial)
        tap = f"kvs{self.tag}{n}"  # IFNAMSIZ: at most 15 characters
        guest = Guest(
            name=name or f"kvs-{self.tag}-{kind}-{n}",
            uuid=str(uuid.uuid4()),
            kind=kind,
            image=self.workdir / f"{self.tag}-{n}-{kind}.img",
            tap=tap,
        )
        write_image(guest.image, kind)
        self.made.append(guest)
        conn = libvirt.open(self.uri)
        try:
            dom = conn.defineXML(
                domain_xml(guest.name, guest.uuid, guest.image, guest.tap, self.accel)
            )
            if start:
                dom.create()
        finally:
            conn.close()
        return guest

    def create_linux(self, *, name: str | None = None, disk_format: str = "raw") -> LinuxGuest:
        """Define and start a Linux guest; return once its init wrote its first console line.

        The first one of the factory finds the accelerator: KVM when it boots the kernel within
        LINUX_KVM_PROBE_S, else TCG (the guest is destroyed and started again under TCG).
        Raises LinuxGuestUnavailable when the kernel or busybox is missing.
        """
        import libvirt

        if self._linux is None:
            kernel = find_kernel()
            initrd = build_initramfs(kernel, self.workdir / f"{self.tag}-initrd.gz")
            vmlinux = extract_pvh(kernel.image, self.workdir / f"{self.tag}-vmlinux")
            self.linux_kernel = "pvh" if vmlinux else "bzImage"
            self._linux = (vmlinux or kernel.image, initrd)
        kernel_image, initrd = self._linux
        n = next(self._serial)
        guest_name = name or f"kvs-{self.tag}-linux-{n}"
        image = (
            self.workdir / f"{self.tag}-{n}-linux.{'qcow2' if disk_format == 'qcow2' else 'img'}"
        )
        if disk_format == "qcow2":  # internal snapshots (the guest's memory too) live in it
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(IMAGE_BYTES)],
                check=True,
            )
        else:
            with image.open("wb") as f:
                f.truncate(IMAGE_BYTES)  # a blank disk, for virtio_blk to find
        console = Console(self.workdir / f"{self.tag}-{n}-console.log")
        guest_uuid, tap = str(uuid.uuid4()), f"kvs{self.tag}{n}"
        placeholder = Guest(guest_name, guest_uuid, "linux", image, tap)
        self.made.append(placeholder)  # removed by cleanup even if the boot fails

        def boot(accel: str, timeout: float) -> float | None:
            xml = domain_xml(
                guest_name,
                guest_uuid,
                image,
                tap,
                accel,
                LINUX_MEMORY_MIB,
                boot=linux_boot(kernel_image, initrd),
                cpu=linux_cpu(accel),
                serial=console.path,
                disk_format=disk_format,
            )
            conn = libvirt.open(self.uri)
            try:
                dom = conn.defineXML(xml)
                t0 = time.monotonic()
                dom.create()
                try:
                    seen = console.wait_for(BOOT_MARK, timeout, since=t0)
                except TimeoutError:
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.destroy()
                    return None
                return seen.at - t0
            finally:
                conn.close()

        took: float | None = None
        accel = self.linux_accel or ("kvm" if self.accel == "kvm" else "tcg")
        if accel == "kvm":
            t0 = time.monotonic()
            took = boot("kvm", LINUX_KVM_PROBE_S if self.linux_accel is None else LINUX_BOOT_S)
            if self.linux_accel is None:
                self.linux_probe_s = round(time.monotonic() - t0, 2)
            if took is None:
                accel = "tcg"
        if took is None:
            accel = "tcg"
            took = boot("tcg", LINUX_BOOT_S)
        if took is None:
            tail = "\n".join(line.text for line in console.lines[-20:])
            raise TimeoutError(f"{guest_name} did not boot in {LINUX_BOOT_S}s:\n{tail}")
        self.linux_accel = accel
        guest = LinuxGuest(guest_name, guest_uuid, "linux", image, tap, console, accel, took)
        self.made[self.made.index(placeholder)] = guest
        return guest

    def wait_booted(self, *guests: Guest, timeout: float = 120.0) -> float:
        """Wait until the BIOS has read each guest's boot sector (disk read bytes > 0).

        SeaBIOS spins the vCPU until then: ~2.5 s under nested KVM here, ~0.2 s under TCG, but
        20 s was seen run out on a machine loaded ten times over (its figure is reported, so a
        slow boot shows without failing). Returns the seconds waited.
        """
        import libvirt

        t0 = time.monotonic()
        pending = {g.uuid for g in guests}
        conn = libvirt.open(self.uri)
        try:
            while pending:
                doms = [conn.lookupByUUIDString(u) for u in pending]
                for dom, stats in conn.domainListGetStats(doms, libvirt.VIR_DOMAIN_STATS_BLOCK):
                    if stats.get("block.0.rd.bytes", 0) > 0:
                        pending.discard(dom.UUIDString())
                if pending and time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"guests {sorted(pending)} did not boot in {timeout}s")
                if pending:
                    time.sleep(0.05)
        finally:
            conn.close()
        return time.monotonic() - t0

    @staticmethod
    def qemu_pid(guest: Guest) -> int | None:
        """The pid of the guest's QEMU process, found by its `-name guest=<name>` argument."""
        needle = f"guest={guest.name},".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.startswith(needle) for a in args) and b"-name" in args:
                return int(entry.name)
        return None

    def remove(self, guest: Guest) -> None:
        """Destroy (if running) and undefine one guest, delete its image."""
        import libvirt

        with contextlib.suppress(libvirt.libvirtError):
            conn = libvirt.open(self.uri)
            try:
                dom = conn.lookupByUUIDString(guest.uuid)
                if dom.isActive():
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.destroy()
                # With its snapshots' metadata: libvirt refuses to undefine a VM that has some.
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            finally:
                conn.close()
        guest.image.unlink(missing_ok=True)
        if isinstance(guest, LinuxGuest):
            guest.console.path.unlink(missing_ok=True)
        if guest in self.made:
            self.made.remove(guest)

    def cleanup(self) -> None:
        for guest in list(self.made):
            self.remove(guest)
