"""A tiny guest for the libvirt tests: a Debian kernel and a busybox initramfs.

    python tools/harness/guestimage.py build [DIR]     # default .run/guest-image

Built from Debian packages only, never from a downloaded image: ``apt-get
download`` fetches ``linux-image-amd64`` (to learn the versioned kernel package
it depends on), that kernel package and ``busybox-static``; ``dpkg-deb`` lets us
read the kernel, two watchdog modules (``watchdog.ko``, ``i6300esb.ko``) and
pvpanic's ACPI driver (``pvpanic.ko``, ``pvpanic-mmio.ko``) and virtio-blk
(``virtio_blk.ko`` and the virtio modules it needs) out of them
(nothing is installed). The kernel is kept uncompressed (the ELF ``vmlinux``
inside Debian's xz-compressed bzImage) when it has a PVH entry point, as
Debian's has: QEMU then loads it directly, which under TCG boots about three
times faster than decompressing the bzImage in the guest. Otherwise the bzImage
is used as is. The initramfs is a newc cpio written here, gzip-compressed,
with busybox and this ``/init``:

* load the i6300esb watchdog with a 2 s heartbeat (``ih.heartbeat=N`` on the
  kernel command line changes it) and feed it with busybox ``watchdog``;
* print ``ih-guest: feeding the watchdog`` on the console (ttyS0);
* read commands, one per line, from the second serial port (ttyS1):
  ``hang`` kills the feeder without the magic close, so the watchdog fires
  (the guest OS "hangs"); ``panic`` panics the kernel (pvpanic tells QEMU);
  ``poweroff`` shuts the guest down from inside; ``fill`` writes zeros over
  the first virtio disk (``/dev/vda``) until it fails, so a disk whose host
  file cannot grow stops the guest on an I/O error (``error_policy='stop'``).

Building takes a few seconds and is cached: ``build()`` returns at once when
DIR already holds the kernel and initramfs of this recipe (``RECIPE`` in
``DIR/recipe``).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import lzma
import os
import struct
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DIR = os.path.join(TOP, ".run", "guest-image")
RECIPE = "7"  # bump when the init, the module list or the kernel's form changes
KERNEL_META = "linux-image-amd64"
BUSYBOX = "busybox-static"
MODULES = (  # in load order
    "kernel/drivers/watchdog/watchdog.ko",
    "kernel/drivers/watchdog/i6300esb.ko",
    "kernel/drivers/misc/pvpanic/pvpanic.ko",
    "kernel/drivers/misc/pvpanic/pvpanic-mmio.ko",
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
)

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
hb=2
for arg in $(cat /proc/cmdline); do
  case "$arg" in ih.heartbeat=*) hb="${arg#ih.heartbeat=}" ;; esac
done
for m in @MODULES@; do
  if [ "$m" = i6300esb ]; then insmod /lib/modules/$m.ko heartbeat="$hb"
  else insmod /lib/modules/$m.ko; fi || echo "ih-guest: insmod $m failed"
done
watchdog -F -T "$hb" -t 1 /dev/watchdog &
feeder=$!
echo "ih-guest: feeding the watchdog (heartbeat $hb s, feeder $feeder)"
while true; do
  if read -r cmd < /dev/ttyS1; then
    case "$cmd" in
      hang) kill -9 "$feeder"; echo "ih-guest: stopped feeding the watchdog" ;;
      panic) echo "ih-guest: panicking"; echo c > /proc/sysrq-trigger ;;
      poweroff) echo "ih-guest: powering off"; poweroff -f ;;
      fill)
        if [ -b /dev/vda ]; then
          echo "ih-guest: filling /dev/vda"
          dd if=/dev/zero of=/dev/vda bs=64k conv=fsync 2>/dev/null &
        else
          echo "ih-guest: no disk /dev/vda"
        fi ;;
      "") ;;
      *) echo "ih-guest: unknown command $cmd" ;;
    esac
  else
    sleep 1
  fi
done
""".replace("@MODULES@", " ".join(os.path.basename(m)[:-3] for m in MODULES))


class BuildError(RuntimeError):
    pass


def _run(argv, cwd=None) -> str:
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return p.stdout


def download(names, where: str) -> dict[str, str]:
    """apt-get download, then the .deb of each name (apt-get update once if needed)."""
    for attempt in range(8):
        try:
            _run(["apt-get", "download", "-q", *names], cwd=where)
            break
        except BuildError as e:
            if attempt == 7:
                raise
            if "Unable to locate package" in str(e) or "Can't select" in str(e):
                subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            else:  # the apt lock (another engineer installing): wait and retry
                time.sleep(5)
    found = {}
    for name in names:
        debs = glob.glob(os.path.join(where, f"{name}_*.deb"))
        if not debs:
            raise BuildError(f"apt-get download {name} left no .deb in {where}")
        found[name] = debs[0]
    return found


def _kernel_package(meta_deb: str) -> str:
    depends = _run(["dpkg-deb", "-f", meta_deb, "Depends"])
    for dep in depends.split(","):
        name = dep.strip().split()[0]
        if name.startswith("linux-image-") and name[len("linux-image-"):][:1].isdigit():
            return name
    raise BuildError(f"{meta_deb} depends on no versioned kernel: {depends.strip()}")


def _extract(deb: str, dest: str, *patterns: str) -> None:
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    try:
        subprocess.run(["tar", "-x", "--wildcards", "-C", dest, "-f", "-", *patterns],
                       stdin=tar.stdout, check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        raise BuildError(f"extracting {patterns} from {deb}: {e.stderr.decode()[-300:]}")
    finally:
        tar.stdout.close()
        tar.wait()


def _cpio_newc(entries) -> bytes:
    """A newc ("070701") cpio archive of (path, mode, data-or-target) entries."""
    out = io.BytesIO()
    ino = 1
    for path, mode, data in list(entries) + [("TRAILER!!!", 0, b"")]:
        name = path.encode() + b"\0"
        header = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name), 0))
        out.write(header.encode() + name)
        out.write(b"\0" * (-(110 + len(name)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
        ino += 1
    return out.getvalue()


def _initramfs(busybox: str, modules: dict[str, bytes]) -> bytes:
    entries = [(d, 0o040755, b"") for d in ("bin", "dev", "proc", "sys", "lib",
                                            "lib/modules", "tmp")]
    with open(busybox, "rb") as f:
        entries.append(("bin/busybox", 0o100755, f.read()))
    entries.append(("bin/sh", 0o120777, b"busybox"))
    for name, data in modules.items():
        entries.append((f"lib/modules/{name}", 0o100644, data))
    entries.append(("init", 0o100755, INIT.encode()))
    return gzip.compress(_cpio_newc(entries), compresslevel=6, mtime=0)


def paths(directory: str = DEFAULT_DIR) -> tuple[str, str]:
    return os.path.join(directory, "kernel"), os.path.join(directory, "initrd.gz")


XZ_MAGIC = b"\xfd7zXZ\x00"
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point QEMU boots an ELF kernel by


def has_pvh_entry(elf: bytes) -> bool:
    """Does this ELF64 kernel carry a Xen PHYS32_ENTRY note (PVH boot)?"""
    if elf[:5] != b"\x7fELF\x02":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf,
                                                                 phoff + i * phentsize)
        if p_type != PT_NOTE:
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def pvh_kernel(bzimage: bytes) -> bytes | None:
    """The uncompressed ELF kernel inside an xz-compressed bzImage, if it can
    be booted directly (a PVH entry point); None otherwise."""
    start = bzimage.find(XZ_MAGIC)
    while start != -1:
        try:
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
        except lzma.LZMAError:
            elf = b""
        if elf[:4] == b"\x7fELF":
            return elf if has_pvh_entry(elf) else None
        start = bzimage.find(XZ_MAGIC, start + 1)
    return None


def build(directory: str = DEFAULT_DIR) -> tuple[str, str]:
    """(kernel, initramfs) in ``directory``, built if missing or of another recipe."""
    kernel, initrd = paths(directory)
    stamp = os.path.join(directory, "recipe")
    try:
        with open(stamp) as f:
            built = f.read().split()  # the recipe, then the kernel package it came from
            if built[:1] == [RECIPE] and os.path.exists(kernel) and os.path.exists(initrd):
                return kernel, initrd
    except FileNotFoundError:
        pass
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as work:
        os.chmod(work, 0o755)  # apt-get download runs as _apt when it can
        meta = download([KERNEL_META], work)[KERNEL_META]
        package = _kernel_package(meta)
        debs = download([package, BUSYBOX], work)
        root = os.path.join(work, "root")
        os.makedirs(root)
        _extract(debs[package], root, "./boot/vmlinuz-*",
                 *(f"./lib/modules/*/{m}" for m in MODULES))
        _extract(debs[BUSYBOX], root, "./bin/busybox")
        (vmlinuz,) = glob.glob(os.path.join(root, "boot", "vmlinuz-*"))
        modules = {}
        for m in MODULES:
            (path,) = glob.glob(os.path.join(root, "lib", "modules", "*", m))
            with open(path, "rb") as f:
                modules[os.path.basename(m)] = f.read()
        image = _initramfs(os.path.join(root, "bin", "busybox"), modules)
        with open(vmlinuz, "rb") as f:
            bzimage = f.read()
        with open(kernel + ".tmp", "wb") as f:
            f.write(pvh_kernel(bzimage) or bzimage)
        os.replace(kernel + ".tmp", kernel)
        with open(initrd + ".tmp", "wb") as f:
            f.write(image)
        os.replace(initrd + ".tmp", initrd)
        with open(stamp, "w") as f:
            f.write(f"{RECIPE}\n{package}\n")
    return kernel, initrd


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("dir", nargs="?", default=DEFAULT_DIR)
    args = p.parse_args(argv)
    try:
        kernel, initrd = build(args.dir)
    except BuildError as e:
        print(f"guestimage: {e}", file=sys.stderr)
        return 1
    print(f"{kernel}\n{initrd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
