"""Every option's value is checked at start-up, not when first read: a bad
value in any group the daemon reads refuses to start, naming the group,
option and file (the agent reads only its own groups: a typo in [fencing]
of a shared file must not take every host's agent down, the controller
refuses it); a secret's value is never quoted."""

import subprocess
import sys

import pytest
from oslo_config import cfg

from instanceha import exceptions
from instanceha.cmd import common
from instanceha.conf import opts as ih_opts
from instanceha.conf import validate


def load(tmp_path, text):
    path = tmp_path / "instanceha.conf"
    path.write_text(text)
    conf = common.make_conf()
    conf(["--config-file", str(path)], project="instanceha")
    return conf, str(path)


@pytest.mark.parametrize("text,group,option", [
    ("[agent]\nheartbeat_interval = 0\n", "agent", "heartbeat_interval"),
    ("[fencing]\ndeadline = 0\n", "fencing", "deadline"),  # not read by every process
    ("[controller]\nmax_fences_per_tick = many\n", "controller", "max_fences_per_tick"),
])
def test_a_bad_value_anywhere_is_refused_naming_option_and_file(tmp_path, text, group, option):
    conf, path = load(tmp_path, text)
    with pytest.raises(exceptions.ConfigError) as e:
        validate.validate_values(conf)
    assert f"[{group}] {option} in {path}" in str(e.value)


def test_defaults_and_keystoneauth_plugin_options_pass(tmp_path):
    conf, _ = load(tmp_path, "[nova]\nauth_type = password\nauth_url = http://127.0.0.1/\n"
                             "password = hunter2\n")
    validate.validate_values(conf)


def test_a_secrets_value_is_never_quoted(tmp_path, monkeypatch):
    secret = cfg.IntOpt("pin", secret=True)
    monkeypatch.setattr(ih_opts, "list_opts", lambda names=None: [("vault", [secret])])
    path = tmp_path / "instanceha.conf"
    path.write_text("[vault]\npin = s3cr3t-value\n")
    conf = cfg.ConfigOpts()
    conf.register_opt(secret, group="vault")
    conf(["--config-file", str(path)])
    with pytest.raises(exceptions.ConfigError) as e:
        validate.validate_values(conf)
    assert "s3cr3t-value" not in str(e.value) and "[vault] pin" in str(e.value)


@pytest.mark.parametrize("prog,text,where", [
    ("agent", "[agent]\nheartbeat_interval = 0\n", "[agent] heartbeat_interval"),
    ("controller", "[fencing]\ndeadline = 0\n", "[fencing] deadline"),
])
def test_the_daemons_refuse_to_start(tmp_path, prog, text, where):
    path = tmp_path / "instanceha.conf"
    path.write_text(text)
    r = subprocess.run([sys.executable, "-m", f"instanceha.cmd.{prog}", "--config-file",
                        str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"{where} in {path}" in r.stderr and "Traceback" not in r.stderr


def test_the_agent_reads_only_its_own_groups():
    from instanceha.cmd import agent

    conf = common.make_conf(agent.GROUPS)
    assert "fencing" not in conf and "nova" not in conf and "agent" in conf
