"""Tiny boot-sector guests for the e2e tests: disk images written as bytes, domain XML, cleanup.

No downloads and no assembler: a guest is SeaBIOS loading one 512-byte boot sector from a
virtio disk (so the disk has read bytes once it booted) and running it. Such a guest has no
ACPI handling, no balloon driver and no network stack: shutdown requests are ignored, balloon
stats never get fresh (memory falls back to rss) and the interface counts only host traffic.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

Kind = Literal["idle", "spin"]

# sti; hlt; jmp short back to sti -- sleeps until the next timer interrupt, forever.
IDLE_CODE = bytes([0xFB, 0xF4, 0xEB, 0xFC])
# cli; jmp $ -- one vCPU at 100 %.
SPIN_CODE = bytes([0xFA, 0xEB, 0xFE])
CODE: dict[Kind, bytes] = {"idle": IDLE_CODE, "spin": SPIN_CODE}
IMAGE_BYTES = 1 << 20
MEMORY_MIB = 32


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
    name: str, uuid_: str, image: Path, tap: str, accel: str, memory_mib: int = MEMORY_MIB
) -> str:
    """1 vCPU, a virtio disk, a host tap (type='ethernet', libvirt creates it as root and
    removes it at stop; no bridge needed) and a virtio balloon; KVM or TCG ('qemu')."""
    domain_type = "kvm" if accel == "kvm" else "qemu"
    return f"""<domain type='{domain_type}'>
  <name>{escape(name)}</name>
  <uuid>{uuid_}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <currentMemory unit='MiB'>{memory_mib}</currentMemory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file={quoteattr(str(image))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='ethernet'>
      <target dev='{tap}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <controller type='usb' model='none'/>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


@dataclass(frozen=True)
class Guest:
    name: str
    uuid: str
    kind: Kind
    image: Path
    tap: str


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
        workdir.mkdir(parents=True, exist_ok=True)

    def create(self, kind: Kind, *, name: str | None = None, start: bool = True) -> Guest:
        """Write the image, define the domain, start it unless start=False."""
        import libvirt

        n = len(self.made)
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
                dom.undefine()
            finally:
                conn.close()
        guest.image.unlink(missing_ok=True)
        if guest in self.made:
            self.made.remove(guest)

    def cleanup(self) -> None:
        for guest in list(self.made):
            self.remove(guest)
