"""The guest image's cache (tools/harness/guestimage.py): built once per recipe."""

import pytest
from harness import guestimage


def _built(tmp_path, stamp):
    kernel, initrd = guestimage.paths(str(tmp_path))
    for path in (kernel, initrd):
        with open(path, "wb") as f:
            f.write(b"x")
    (tmp_path / "recipe").write_text(stamp)


def test_an_image_of_this_recipe_is_reused_without_apt(tmp_path, monkeypatch):
    def no_download(names, where):
        raise AssertionError(f"downloaded {names}")

    monkeypatch.setattr(guestimage, "download", no_download)
    _built(tmp_path, f"{guestimage.RECIPE}\nlinux-image-6.1.0-57-amd64\n")
    assert guestimage.build(str(tmp_path)) == guestimage.paths(str(tmp_path))


def test_an_image_of_another_recipe_is_rebuilt(tmp_path, monkeypatch):
    asked = []

    def download(names, where):
        asked.append(names)
        raise guestimage.BuildError("no network in a unit test")

    monkeypatch.setattr(guestimage, "download", download)
    _built(tmp_path, "0\nlinux-image-6.1.0-1-amd64\n")
    with pytest.raises(guestimage.BuildError):
        guestimage.build(str(tmp_path))
    assert asked == [[guestimage.KERNEL_META]]


def _elf(note_type):
    """A minimal ELF64 with one PT_NOTE holding one "Xen" note of ``note_type``."""
    import struct

    note = struct.pack("<III", 4, 4, note_type) + b"Xen\0" + b"\0" * 4
    phoff, phentsize = 64, 56
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, 0, phoff, 0, 0, 64, phentsize, 1, 0, 0, 0)
    offset = phoff + phentsize
    ph = struct.pack("<IIQQQQQQ", guestimage.PT_NOTE, 4, offset, 0, 0, len(note), len(note), 4)
    return header + ph + note


def test_the_uncompressed_kernel_is_used_when_it_has_a_pvh_entry():
    import lzma

    pvh, plain = _elf(guestimage.XEN_ELFNOTE_PHYS32_ENTRY), _elf(5)
    assert guestimage.has_pvh_entry(pvh) and not guestimage.has_pvh_entry(plain)
    setup = b"MZ" + b"\0" * 100 + guestimage.XZ_MAGIC + b"not a stream"  # a false start
    assert guestimage.pvh_kernel(setup + lzma.compress(pvh) + b"tail") == pvh
    assert guestimage.pvh_kernel(setup + lzma.compress(plain)) is None
    assert guestimage.pvh_kernel(b"a gzip bzImage") is None
