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

    monkeypatch.setattr(guestimage, "_download", no_download)
    _built(tmp_path, f"{guestimage.RECIPE}\nlinux-image-6.1.0-57-amd64\n")
    assert guestimage.build(str(tmp_path)) == guestimage.paths(str(tmp_path))


def test_an_image_of_another_recipe_is_rebuilt(tmp_path, monkeypatch):
    asked = []

    def download(names, where):
        asked.append(names)
        raise guestimage.BuildError("no network in a unit test")

    monkeypatch.setattr(guestimage, "_download", download)
    _built(tmp_path, "0\nlinux-image-6.1.0-1-amd64\n")
    with pytest.raises(guestimage.BuildError):
        guestimage.build(str(tmp_path))
    assert asked == [[guestimage.KERNEL_META]]
