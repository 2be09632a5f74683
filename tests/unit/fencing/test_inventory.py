"""Inventory validation: every error names the file, the host and the key."""

import os

import pytest

from instanceha.fencing import exceptions as exc
from instanceha.fencing import inventory

from .conftest import PASSWORD

DRIVERS = {"ipmi", "redfish", "fake"}


def write(tmp_path, text, mode=0o600, name="inventory.yaml"):
    path = tmp_path / name
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


GOOD = f"""
hosts:
  compute1:
    driver: ipmi
    address: 10.0.0.11
    username: admin
    password: {PASSWORD}
  compute2:
    driver: redfish
    address: bmc2.example.org
    port: 8443
    username: admin
    password_file: pw2
    verify: false
    system_id: "1"
    timeout: 5
    deadline: 30
  compute3:
    driver: fake
    address: fake-bmc-compute3
"""


def test_a_good_inventory_loads(tmp_path):
    write(tmp_path, PASSWORD + "\n", name="pw2")
    inv = inventory.load(write(tmp_path, GOOD), drivers=DRIVERS)
    assert inv.hosts() == ["compute1", "compute2", "compute3"]
    c1, c2, c3 = (inv.get(h) for h in inv.hosts())
    assert (c1.driver, c1.address, c1.port, c1.verify) == ("ipmi", "10.0.0.11", None, True)
    assert c1.password.reveal() == PASSWORD
    assert c2.password.reveal() == PASSWORD  # newline stripped, path relative to the file
    assert (c2.port, c2.verify, c2.system_id, c2.timeout, c2.deadline) == (8443, False, "1",
                                                                           5, 30)
    assert c3.password is None and c3.username is None


def test_the_default_drivers_are_the_entry_points(tmp_path):
    write(tmp_path, "x", name="pw2")
    assert len(inventory.load(write(tmp_path, GOOD))) == 3


def test_a_host_with_no_entry_names_the_file_and_the_host(tmp_path):
    write(tmp_path, "x", name="pw2")
    path = write(tmp_path, GOOD)
    inv = inventory.load(path, drivers=DRIVERS)
    with pytest.raises(exc.HostNotInInventory) as e:
        inv.get("compute9")
    assert "compute9" in str(e.value) and path in str(e.value)
    assert e.value.action.name == "ESCALATE"


BAD = [
    # (host entry, key named, words in the reason)
    ({"driver": "ilo", "address": "a", "username": "u", "password": "p"}, "driver",
     "unknown driver 'ilo'"),
    ({"address": "a"}, "driver", "missing"),
    ({"driver": "ipmi", "username": "u", "password": "p"}, "address", "missing"),
    ({"driver": "ipmi", "address": "a", "password": "p"}, "username", "missing"),
    ({"driver": "ipmi", "address": "a", "username": "u"}, "password", "missing"),
    ({"driver": "ipmi", "address": "a", "username": "u", "password": "p",
      "password_file": "/x"}, "password", "not both"),
    ({"driver": "ipmi", "address": "a", "username": "u", "password": "p", "port": "623"},
     "port", "integer"),
    ({"driver": "ipmi", "address": "a", "username": "u", "password": "p", "port": 70000},
     "port", "between"),
    ({"driver": "ipmi", "address": 12, "username": "u", "password": "p"}, "address", "string"),
    ({"driver": "ipmi", "address": "a", "username": "u", "password": "p", "timeout": "10s"},
     "timeout", "number of seconds"),
    ({"driver": "ipmi", "address": "a", "username": "u", "password": "p", "deadline": 0},
     "deadline", "between"),
    ({"driver": "ipmi", "address": "a", "username": "u", "pasword": "p"}, "pasword",
     "unknown key"),
    ({"driver": "redfish", "address": "a", "username": "u", "password": "p",
      "verify": "/no/such/ca.pem"}, "verify", "does not exist"),
    ({"driver": "redfish", "address": "a", "username": "u", "password": "p",
      "scheme": "ftp"}, "scheme", "https or http"),
    ({"driver": "ipmi", "address": "a", "username": "u", "password_file": "/no/such"},
     "password_file", "cannot read"),
    ("just a string", "-", "mapping"),
]


@pytest.mark.parametrize("raw, key, words", BAD)
def test_each_error_names_file_host_and_key(raw, key, words):
    with pytest.raises(exc.InventoryError) as e:
        inventory.from_data({"hosts": {"computeX": raw}}, "/etc/x/inv.yaml", DRIVERS)
    msg = str(e.value)
    assert "/etc/x/inv.yaml" in msg and "host computeX" in msg and f"key {key}" in msg
    assert words in msg
    assert e.value.action.name == "ESCALATE"


@pytest.mark.parametrize("data", [None, [], {"hosts": []}, {"hosts": {}, "extra": 1}])
def test_the_top_level_shape_is_checked(data):
    with pytest.raises(exc.InventoryError):
        inventory.from_data(data, "f.yaml", DRIVERS)


def test_world_readable_file_with_passwords_is_refused(tmp_path):
    path = write(tmp_path, GOOD.split("  compute2:")[0], mode=0o644)
    with pytest.raises(exc.InventoryError) as e:
        inventory.load(path, drivers=DRIVERS)
    msg = str(e.value)
    assert "world-readable" in msg and "chmod o-rwx" in msg and "compute1" in msg
    assert "key password" in msg and path in msg


def test_world_readable_file_without_passwords_is_fine(tmp_path):
    path = write(tmp_path, "hosts:\n  c:\n    driver: fake\n    address: f\n", mode=0o644)
    assert inventory.load(path, drivers=DRIVERS).hosts() == ["c"]


def test_world_readable_password_file_is_refused(tmp_path):
    pw = write(tmp_path, PASSWORD, mode=0o604, name="pw")
    with pytest.raises(exc.InventoryError) as e:
        inventory.from_data({"hosts": {"c": {"driver": "ipmi", "address": "a", "username": "u",
                                             "password_file": pw}}}, "f.yaml", DRIVERS)
    assert "world-readable" in str(e.value) and "key password_file" in str(e.value)


def test_yaml_errors_name_the_line_but_do_not_echo_it(tmp_path):
    path = write(tmp_path, f"hosts:\n  c:\n    password: [{PASSWORD}\n")
    with pytest.raises(exc.InventoryError) as e:
        inventory.load(path, drivers=DRIVERS)
    assert "not valid YAML" in str(e.value) and PASSWORD not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(exc.InventoryError) as e:
        inventory.load(str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in str(e.value) and "cannot read" in str(e.value)


def test_the_sample_inventory_is_valid(tmp_path):
    sample = os.path.join(os.path.dirname(__file__), "..", "..", "..", "etc", "instanceha",
                          "fencing-inventory.yaml.sample")
    text = open(sample).read()
    for name in ("compute1", "compute2", "compute3", "compute4"):
        write(tmp_path, "password\n", name=f"bmc-{name}")
    text = text.replace("/etc/instanceha/bmc/", f"{tmp_path}/bmc-")
    text = text.replace("/etc/instanceha/bmc-ca.pem", f"{tmp_path}/bmc-compute1")
    inv = inventory.load(write(tmp_path, text), drivers=DRIVERS | {"fence_agent"})
    assert inv.hosts() == ["compute1", "compute2", "compute3", "compute4"]
    assert inv.get("compute2").system_id == "/redfish/v1/Systems/1"
    # a two-level host: its BMC, then the two outlets of its power supplies
    assert [[d.describe() for d in lv] for lv in inv.levels_of("compute4")] == [
        ["fence_ipmilan at 10.0.0.14"],
        ["fence_apc_snmp at pdu-a.example.org plug 4", "fence_apc_snmp at pdu-b.example.org "
         "plug 4"]]
