"""The controller's Fencer re-reads a changed inventory file before its next
action (a BMC password fixed in the file is used by the next retry, no
restart); a file that no longer loads is refused and the last good one kept."""

import os

import pytest

from instanceha.fencing import exceptions as exc
from instanceha.fencing import inventory
from instanceha.fencing.fencer import Fencer


def write(path, text, mode=0o600):
    path.write_text(text)
    os.chmod(path, mode)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a visible change


ONE = "hosts:\n  compute1:\n    driver: fake\n    address: fake-a\n"


def test_a_changed_file_is_used_by_the_next_action(tmp_path):
    path = tmp_path / "inventory.yaml"
    write(path, ONE)
    fencer = Fencer(inventory.load(str(path))).watch(str(path), inventory.load)
    first = fencer.driver("compute1")
    assert first.entry.address == "fake-a"
    with pytest.raises(exc.HostNotInInventory):
        fencer.driver("compute2")
    write(path, ONE.replace("fake-a", "fake-b")
          + "  compute2:\n    driver: fake\n    address: fake-c\n")
    renewed = fencer.driver("compute1")
    assert renewed is not first and renewed.entry.address == "fake-b"
    assert fencer.driver("compute2").entry.address == "fake-c"
    assert fencer.driver("compute1") is renewed  # unchanged since: kept
    fencer.close()


def test_a_broken_file_is_refused_and_the_last_good_one_kept(tmp_path, caplog):
    path = tmp_path / "inventory.yaml"
    write(path, ONE)
    fencer = Fencer(inventory.load(str(path))).watch(str(path), inventory.load)
    before = fencer.driver("compute1")
    write(path, "hosts:\n  compute1:\n    driver: nosuch\n")
    assert fencer.driver("compute1") is before
    assert "changed but is refused" in caplog.text and str(path) in caplog.text
    write(path, ONE.replace("    address: fake-a\n", "    address: fake-a\n    password: pw\n"),
          mode=0o644)  # world-readable with a password: refused as at start
    assert fencer.driver("compute1") is before
    fencer.close()


LEVELS = ("hosts:\n  compute1:\n    levels:\n"
          "      - devices: [{driver: fake, address: bmc}]\n"
          "      - devices: [{driver: fake, address: pdu-a}, {driver: fake, address: pdu-b}]\n")


def test_a_changed_device_of_a_level_renews_the_hosts_drivers(tmp_path):
    path = tmp_path / "inventory.yaml"
    write(path, LEVELS)
    fencer = Fencer(inventory.load(str(path))).watch(str(path), inventory.load)
    levels = fencer.drivers("compute1")
    assert [[d.entry.address for d in lv] for lv in levels] == [["bmc"], ["pdu-a", "pdu-b"]]
    write(path, LEVELS.replace("pdu-b", "pdu-c"))  # only a level-2 device changed
    renewed = fencer.drivers("compute1")
    assert renewed is not levels
    assert [[d.entry.address for d in lv] for lv in renewed] == [["bmc"], ["pdu-a", "pdu-c"]]
    fencer.close()
