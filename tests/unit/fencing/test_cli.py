"""`instanceha fencing check`: table, JSON, exit codes; powers nothing."""

import json
import os

import pytest
from oslo_config import cfg

from instanceha import conf as ih_conf
from instanceha.cmd import fencing_cli
from instanceha.conf import fencing as fencing_conf
from instanceha.exceptions import ConfigError
from instanceha.fencing import PowerState, fake


@pytest.fixture(autouse=True)
def clean_registry():
    fake.REGISTRY.reset()
    yield
    fake.REGISTRY.reset()


def make_conf(tmp_path, inventory=None, extra=""):
    text = "[fencing]\ntest_only_allow_fake_driver = true\n" + extra
    if inventory is not None:
        inv = tmp_path / "inv.yaml"
        inv.write_text(inventory)
        os.chmod(inv, 0o600)
        text += f"inventory_file = {inv}\n"
    path = tmp_path / "instanceha.conf"
    path.write_text(text)
    conf = ih_conf.register_all(cfg.ConfigOpts())
    conf(["--config-file", str(path)], default_config_files=[])
    return conf


INV = """hosts:
  c1: {driver: fake, address: bmc-c1}
  c2: {driver: fake, address: bmc-c2, username: admin, password: pw}
"""


def args(*hosts, fmt="table"):
    import argparse

    p = argparse.ArgumentParser()
    fencing_cli.register(p.add_subparsers(dest="cmd"))
    return p.parse_args(["fencing", "check", *hosts, "--format", fmt])


def test_all_answer_table(tmp_path, capsys):
    code = fencing_cli.run_check(args(), make_conf(tmp_path, INV))
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["HOST", "DRIVER", "ADDRESS"]
    assert "c1" in out and "c2" in out and "on" in out
    assert fake.REGISTRY.bmc("bmc-c1").requests == []


def test_failures_give_exit_1_and_json(tmp_path, capsys):
    fake.REGISTRY.bmc("bmc-c2").password = "other"
    code = fencing_cli.run_check(args("c1", "c2", fmt="json"), make_conf(tmp_path, INV))
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["ok"] is False
    by_host = {h["host"]: h for h in data["hosts"]}
    assert by_host["c1"]["ok"] and by_host["c1"]["power_state"] == "on"
    assert by_host["c2"]["error_type"] == "AuthFailed" and by_host["c2"]["authenticated"] is False
    assert "pw" not in json.dumps(by_host["c2"]["error"]).replace("password", "")


def test_table_lists_errors_under_the_table(tmp_path, capsys):
    fake.REGISTRY.bmc("bmc-c1").down = True
    assert fencing_cli.run_check(args(), make_conf(tmp_path, INV)) == 1
    out = capsys.readouterr().out
    assert "BMCUnreachable" in out and "c1 (level 1, fake): BMC of c1" in out


def test_a_host_not_in_the_inventory_is_exit_2(tmp_path, capsys):
    assert fencing_cli.run_check(args("c1", "c9"), make_conf(tmp_path, INV)) == 2
    err = capsys.readouterr().err
    assert "c9" in err and "inv.yaml" in err


def test_no_inventory_is_exit_2(tmp_path, capsys):
    assert fencing_cli.run_check(args(), make_conf(tmp_path)) == 2
    assert "inventory_file" in capsys.readouterr().err


def test_bad_inventory_is_exit_2(tmp_path, capsys):
    assert fencing_cli.run_check(args(), make_conf(tmp_path, "hosts:\n  c1: {driver: x}\n")) == 2
    assert "key driver" in capsys.readouterr().err


def test_policy_from_config(tmp_path):
    conf = make_conf(tmp_path, INV, "deadline = 20\npoll_interval = 0.5\n"
                     "power_on_after_recovery = true\nmax_concurrent = 3\n")
    p = fencing_conf.fence_policy(conf)
    assert (p.deadline, p.poll_interval, p.max_concurrent, p.power_on_after_recovery) == (
        20, 0.5, 3, True)
    f = fencing_conf.make_fencer(conf)
    assert f.power_off("c1").read_back is PowerState.OFF


@pytest.mark.parametrize("extra, option", [
    ("retry_backoff = 5\nretry_backoff_max = 2\n", "retry_backoff"),
    ("deadline = 2\npoll_interval = 3\n", "poll_interval"),
])
def test_policy_cross_checks_name_the_option(tmp_path, extra, option):
    with pytest.raises(ConfigError) as e:
        fencing_conf.fence_policy(make_conf(tmp_path, INV, extra))
    assert f"[fencing] {option}" in str(e.value) and "instanceha.conf" in str(e.value)
