"""The systemd units carry what keeps a daemon running (etc/systemd/)."""

import configparser
import os

import pytest

UNITS = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "systemd")


def _unit(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    with open(os.path.join(UNITS, name)) as f:
        parser.read_file(f)
    return parser


@pytest.mark.parametrize("name", ["instanceha-agent.service", "instanceha-controller.service"])
def test_every_end_but_a_planned_stop_is_restarted_without_limit(name):
    u = _unit(name)
    assert u["Unit"]["StartLimitIntervalSec"] == "0"
    s = u["Service"]
    assert s["Restart"] == "always"
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["RestartPreventExitStatus"] == "2"  # a refused configuration
    assert int(s["OOMScoreAdjust"]) < 0


def test_the_agent_restarts_at_once_and_keeps_its_session_file_on_tmpfs():
    s = _unit("instanceha-agent.service")["Service"]
    assert s["RestartSec"] == "100ms"
    assert s["KillSignal"] == "SIGTERM"
    assert s["RuntimeDirectory"] == "instanceha"
    assert s["RuntimeDirectoryMode"] == "0700"
    assert s["RuntimeDirectoryPreserve"] == "yes"


def test_the_session_file_lives_in_the_units_runtime_directory():
    from instanceha.conf import agent

    (opt,) = [o for o in agent.opts if o.name == "session_file"]
    s = _unit("instanceha-agent.service")["Service"]
    assert os.path.dirname(opt.default) == "/run/" + s["RuntimeDirectory"]
