"""No fake fencing in production: the ``fake`` driver (it powers nothing off and
answers "off") is refused at start, on a reload and by ``instanceha config
check``, unless the test-only switch is set."""

import os

import pytest

from instanceha.cmd import cli, common
from instanceha.conf import fencing as fencing_conf
from instanceha.fencing import exceptions as exc
from instanceha.fencing.fencer import Fencer

REAL = ("hosts:\n  compute1:\n    driver: ipmi\n    address: 10.0.0.1\n"
        "    username: admin\n    password: s3cret-pw\n")
FAKE = "  compute2:\n    driver: fake\n    address: fake-2\n"


def write(path, text):
    path.write_text(text)
    os.chmod(path, 0o600)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    return str(path)


def conf_with(tmp_path, inventory, allow=None):
    # what a controller needs besides fencing, so that only fencing is judged
    text = ("[coordination]\ninsecure = true\ntls = false\n[nova]\nauth_type = password\n"
            f"[fencing]\ninventory_file = {inventory}\n")
    if allow is not None:
        text += f"test_only_allow_fake_driver = {allow}\n"
    path = tmp_path / "instanceha.conf"
    path.write_text(text)
    conf = common.make_conf()
    conf(["--config-file", str(path)], project="instanceha")
    return conf, str(path)


def test_an_inventory_with_the_fake_driver_is_refused(tmp_path):
    inv = write(tmp_path / "inv.yaml", REAL + FAKE)
    conf, _ = conf_with(tmp_path, inv)
    with pytest.raises(exc.InventoryError) as e:
        fencing_conf.load_inventory(conf)
    text = str(e.value)
    assert f"Fencing inventory {inv}, host compute2, key driver" in text
    assert "powers nothing off" in text and "test_only_allow_fake_driver" in text
    assert "s3cret-pw" not in text


def test_the_test_only_switch_lets_it_through(tmp_path):
    inv = write(tmp_path / "inv.yaml", REAL + FAKE)
    conf, _ = conf_with(tmp_path, inv, allow="true")
    assert fencing_conf.fake_hosts(fencing_conf.load_inventory(conf)) == ["compute2"]


def test_a_reload_that_brings_the_fake_driver_keeps_the_previous_inventory(tmp_path, caplog):
    inv = write(tmp_path / "inv.yaml", REAL)
    conf, _ = conf_with(tmp_path, inv)
    load = fencing_conf.inventory_loader(conf)
    fencer = Fencer(load(inv)).watch(inv, load)
    write(tmp_path / "inv.yaml", REAL + FAKE)
    with pytest.raises(exc.HostNotInInventory):
        fencer.driver("compute2")
    assert "changed but is refused" in caplog.text and "powers nothing off" in caplog.text
    fencer.close()


def test_config_check_says_so(tmp_path, capsys):
    inv = write(tmp_path / "inv.yaml", REAL + FAKE)
    _, path = conf_with(tmp_path, inv)
    assert cli.main(["--config-file", path, "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "config check: FAILED" in err and "'fake' driver" in err and "compute2" in err
    _, path = conf_with(tmp_path, inv, allow="true")
    assert cli.main(["--config-file", path, "config", "check"]) == 0
    out = capsys.readouterr()
    assert "WARNING: [fencing] test_only_allow_fake_driver is set" in out.err
    assert "NEVER powered off" in out.err and "config check: OK" in out.out


def test_config_check_reports_a_broken_inventory(tmp_path, capsys):
    inv = write(tmp_path / "inv.yaml", "hosts: [\n")
    _, path = conf_with(tmp_path, inv)
    assert cli.main(["--config-file", path, "config", "check"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
