"""The e2e Linux guest's builders, where a mistake would only show as a guest that never boots."""

from __future__ import annotations

import gzip
import stat
import struct
import time
from pathlib import Path

import pytest

from tests.support.linuxguest import (
    Console,
    Cpio,
    Kernel,
    build_initramfs,
    extract_pvh,
    has_pvh_entry,
    module_order,
)

pytestmark = pytest.mark.unit

DEP = """\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_balloon.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/acpi/button.ko:
"""


def read_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdevmajor, rdevminor)), the way the kernel unpacks the archive."""
    out, pos = {}, 0
    while True:
        assert data[pos : pos + 6] == b"070701", pos
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name_at = pos + 110
        name = data[name_at : name_at + namesize - 1].decode()
        body_at = name_at + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data[body_at : body_at + size], (rmaj, rmin))
        pos = body_at + size + (-size % 4)


def test_modules_come_after_their_dependencies_once_each(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(DEP.replace("\\\n", ""))
    order = module_order(tmp_path, ("virtio_net", "virtio_balloon", "button", "not_there"))
    assert order == [
        "kernel/net/core/failover.ko",
        "kernel/drivers/net/net_failover.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/net/virtio_net.ko",
        "kernel/drivers/virtio/virtio_balloon.ko",
        "kernel/drivers/acpi/button.ko",
    ]


def test_cpio_is_newc_with_padding_the_kernel_accepts() -> None:
    cpio = Cpio()
    cpio.dir("bin")
    cpio.file("bin/x", b"abcde", 0o755)  # odd sizes: padding after name and data
    cpio.chardev("dev/console", 5, 1)
    cpio.file("init", b"#!/bin/sh\n", 0o755)
    entries = read_newc(cpio.finish())
    assert stat.S_ISDIR(entries["bin"][0])
    assert entries["bin/x"][1] == b"abcde" and entries["bin/x"][0] & 0o777 == 0o755
    assert stat.S_ISCHR(entries["dev/console"][0]) and entries["dev/console"][2] == (5, 1)
    assert entries["init"][1] == b"#!/bin/sh\n"


def test_initramfs_holds_init_busybox_and_the_modules_in_load_order(tmp_path: Path) -> None:
    # `make install` installs busybox-static: a missing one is a missing install step, which
    # fails the test rather than skipping it (CI would stay green).
    if not Path("/bin/busybox").exists():
        pytest.fail("busybox-static is not installed: run `make install` (as root)")
    mods = tmp_path / "modules"
    for line in DEP.replace("\\\n", "").splitlines():
        ko = mods / line.split(":")[0]
        ko.parent.mkdir(parents=True, exist_ok=True)
        ko.write_bytes(b"\x7fELF" + ko.name.encode())
    (mods / "modules.dep").write_text(DEP.replace("\\\n", ""))
    kernel = Kernel("test", tmp_path / "vmlinuz", mods)
    entries = read_newc(gzip.decompress(build_initramfs(kernel, tmp_path / "i.gz").read_bytes()))
    assert "ping6" in entries["init"][1].decode() and "acpid" in entries["init"][1].decode()
    assert b"poweroff -f" in entries["etc/acpi/PWRF/00000080"][1]
    load = entries["modules.load"][1].decode().split()
    assert load == [
        "kernel/net/core/failover.ko",
        "kernel/drivers/net/net_failover.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/net/virtio_net.ko",
        "kernel/drivers/virtio/virtio_balloon.ko",
        "kernel/drivers/acpi/button.ko",
    ]
    for path in load:
        assert entries[f"lib/modules/{path}"][1].startswith(b"\x7fELF")
    assert entries["bin/busybox"][1][:4] == b"\x7fELF"


def test_console_reads_whole_lines_as_they_arrive(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    console = Console(log)
    assert console.poll() == []  # no file yet
    log.write_bytes(b"KVS boot 1.5\r\nKVS tick up=2.00 mem_total_kib=93776 mem_avail")
    assert [line.text for line in console.poll()] == ["KVS boot 1.5"]
    with log.open("ab") as f:
        f.write(b"able_kib=70184 tx_bytes=356\n")
    assert console.ticks()[0][1] == {"up": 2.0, "total": 93776, "avail": 70184, "tx": 356}
    assert console.count("KVS boot") == 1


def test_console_wait_ends_at_a_kernel_panic(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"[0.04] Kernel panic - not syncing: IO-APIC + timer doesn't work!\n")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="panicked"):
        Console(log).wait_for("KVS boot", timeout=60)
    assert time.monotonic() - t0 < 5


def elf_with_notes(*notes: tuple[bytes, int]) -> bytes:
    """A minimal 64-bit ELF: a header, one PT_NOTE program header, the notes."""
    body = b""
    for name, n_type in notes:
        padded = name + b"\0" * (-len(name) % 4)
        body += struct.pack("<III", len(name), 4, n_type) + padded + b"\0\0\0\0"
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 120, 0, 0, len(body), len(body), 4)
    return bytes(header) + phdr + body


def bzimage(payload: bytes) -> bytes:
    """A bzImage as the boot protocol lays it out: setup sectors, then the payload."""
    setup = bytearray(2 * 512)  # the boot sector and one setup sector
    setup[0x1F1] = 1
    struct.pack_into("<II", setup, 0x248, 0, len(payload))
    return bytes(setup) + payload


def test_pvh_kernel_is_unpacked_only_when_whole_and_bootable(tmp_path: Path) -> None:
    pvh = elf_with_notes((b"Xen\0", 6), (b"Xen\0", 18))
    image = tmp_path / "vmlinuz"
    image.write_bytes(bzimage(gzip.compress(pvh)))  # gzip ends with the size, as the build's
    out = extract_pvh(image, tmp_path / "vmlinux")
    assert out is not None and out.read_bytes() == pvh

    image.write_bytes(bzimage(gzip.compress(elf_with_notes((b"Xen\0", 6)))))
    assert extract_pvh(image, tmp_path / "none") is None  # no PVH entry: boot the bzImage
    image.write_bytes(bzimage(b"\x28\xb5\x2f\xfd unknown compression"))
    assert extract_pvh(image, tmp_path / "none") is None
    assert not (tmp_path / "none").exists()
    assert not has_pvh_entry(b"\x7fELF\x01\x01" + bytes(64))  # 32-bit: not a kernel we boot
