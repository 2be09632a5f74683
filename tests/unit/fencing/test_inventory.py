"""Inventory validation: every error names the file, the host and the key."""

import os

import pytest

from instanceha.fencing import exceptions as exc
from instanceha.fencing import inventory

GOOD = """hosts:
  compute1:
    driver: ipmi
    address: 10.0.0.11
    username: admin
    password: Very-Secret-1
"""


def write(tmp_path, text, mode=0o600, name="inv.yaml"):
    p = tmp_path / name
    p.write_text(text)
    os.chmod(p, mode)
    return str(p)


def test_good_file_and_secret_never_shows(tmp_path):
    inv = inventory.load(write(tmp_path, GOOD))
    e = inv.get("compute1")
    assert e.driver == "ipmi" and e.password.reveal() == "Very-Secret-1"
    for text in (repr(e), str(e), repr(inv), repr(e.password)):
        assert "Very-Secret-1" not in text


@pytest.mark.parametrize("text,host,key", [
    (GOOD.replace("ipmi", "telnet"), "compute1", "driver"),
    (GOOD.replace("    address: 10.0.0.11\n", ""), "compute1", "address"),
    (GOOD.replace("    username: admin\n", ""), "compute1", "username"),
    (GOOD.replace("    password: Very-Secret-1\n", ""), "compute1", "password"),
    (GOOD + "    port: seven\n", "compute1", "port"),
    (GOOD + "    port: 70000\n", "compute1", "port"),
    (GOOD + "    colour: blue\n", "compute1", "colour"),
    (GOOD + "    verify: /nonexistent/ca.pem\n", "compute1", "verify"),
    ("nothosts: {}\n", "-", "hosts"),
    ("hosts: [1, 2]\n", "-", "hosts"),
])
def test_bad_entries_name_file_host_and_key(tmp_path, text, host, key):
    path = write(tmp_path, text)
    with pytest.raises(exc.InventoryError) as e:
        inventory.load(path)
    msg = str(e.value)
    assert path in msg and f"host {host}" in msg and f"key {key}" in msg
    assert "Very-Secret-1" not in msg


def test_world_readable_file_with_passwords_is_refused(tmp_path):
    path = write(tmp_path, GOOD, mode=0o644)
    with pytest.raises(exc.InventoryError) as e:
        inventory.load(path)
    assert "world-readable" in str(e.value) and "chmod o-rwx" in str(e.value)


def test_password_file_relative_to_the_inventory_and_checked(tmp_path):
    secret = write(tmp_path, "From-File-2\n", name="c1.pw")
    text = GOOD.replace("    password: Very-Secret-1\n", "    password_file: c1.pw\n")
    inv = inventory.load(write(tmp_path, text, mode=0o644))  # no inline password: fine
    assert inv.get("compute1").password.reveal() == "From-File-2"
    os.chmod(secret, 0o644)
    with pytest.raises(exc.InventoryError) as e:
        inventory.load(write(tmp_path, text))
    assert "key password_file" in str(e.value)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(exc.InventoryError) as e:
        inventory.load(write(tmp_path, "hosts: [unclosed\n"))
    assert "not valid YAML" in str(e.value)
    with pytest.raises(exc.InventoryError) as e:
        inventory.load(str(tmp_path / "nope.yaml"))
    assert "cannot read" in str(e.value)


def test_host_without_an_entry(tmp_path):
    inv = inventory.load(write(tmp_path, GOOD))
    with pytest.raises(exc.HostNotInInventory) as e:
        inv.get("compute2")
    assert "compute2" in str(e.value)
