"""Every signal a daemon is sent by habit has a meaning (cmd/common.py)."""

import logging
import os
import signal
import threading

import pytest
from oslo_config import cfg

from instanceha.agent.service import Agent, AgentSettings
from instanceha.cmd import common
from tests.unit.clock import FakeClock
from tests.unit.fakes import FakeCoordinator


@pytest.fixture
def handlers():
    """Restore the process's signal handlers and threading.excepthook after a test."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    hook = threading.excepthook
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    threading.excepthook = hook


@pytest.fixture
def root_level():
    """oslo.log's reload hook sets the root logger's level (debug = true): restored."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


def test_sighup_reloads_and_never_stops_a_daemon(handlers):
    stops, reloads = [], []
    common.on_stop_signals(stops.append, reload=lambda: reloads.append(1))
    os.kill(os.getpid(), signal.SIGHUP)
    os.kill(os.getpid(), signal.SIGHUP)
    assert reloads == [1, 1] and stops == []
    os.kill(os.getpid(), signal.SIGTERM)
    assert stops == ["SIGTERM"]


def test_a_command_line_tool_keeps_the_default_sighup(handlers):
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    common.on_stop_signals(lambda name: None)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def test_reload_config_applies_mutable_options_and_survives_a_broken_file(tmp_path, caplog,
                                                                          root_level):
    path = tmp_path / "a.conf"
    path.write_text("[agent]\nwatched_processes = nova-compute:nova-compute\n")
    conf = common.make_conf()
    conf(["--config-file", str(path)], project="instanceha")
    path.write_text("[DEFAULT]\ndebug = true\n[agent]\nwatched_processes = nova-compute:nc2\n")
    changed = common.reload_config(conf, "test")
    assert (None, "debug") in changed and ("agent", "watched_processes") in changed
    assert conf.debug is True and conf.agent.watched_processes == {"nova-compute": "nc2"}
    path.write_text("[agent\nbroken")
    assert common.reload_config(conf, "test") == {}
    assert "not reloaded" in caplog.text and "running values are kept" in caplog.text
    assert conf.agent.watched_processes == {"nova-compute": "nc2"}


def test_the_agent_reloads_in_its_loop_and_checks_its_services_at_once():
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    services = {"nova-compute": True}
    a = Agent(coord, AgentSettings(host="compute1"), probe=lambda: dict(services), clock=clock)
    a.step()
    reloaded = []

    def reloader():
        reloaded.append(1)
        a.health.probe = lambda: {"nova-compute": True, "ovs": False}

    a.reloader = reloader
    a.request_reload()  # what the SIGHUP handler calls: sets flags only
    assert reloaded == []
    clock.advance(0.5)  # the next health check is not due before 2 s
    a.step()
    assert reloaded == [1] and a.reloads == 1
    assert coord.capability_updates[-1]["services"] == {"nova-compute": True, "ovs": False}


def test_a_failing_reload_never_ends_the_agent(caplog):
    clock = FakeClock()
    a = Agent(FakeCoordinator(clock), AgentSettings(host="compute1"), probe=dict, clock=clock)
    a.reloader = lambda: 1 / 0
    a.request_reload()
    assert a.step() == 0.5
    assert "reload failed" in caplog.text


def test_an_uncaught_exception_in_a_thread_ends_the_process(handlers, monkeypatch, caplog):
    exits = []
    monkeypatch.setattr(os, "_exit", lambda status: exits.append(status))
    common.exit_on_thread_crash("instanceha-agent")
    t = threading.Thread(target=lambda: 1 / 0, name="guest-monitor")
    t.start()
    t.join()
    assert exits == [common.EXIT_CRASH]
    assert "uncaught ZeroDivisionError in thread 'guest-monitor'" in caplog.text


def test_a_controller_thread_crash_stops_the_loop_first(handlers, monkeypatch):
    exits, stopped = [], []
    monkeypatch.setattr(os, "_exit", lambda status: exits.append(status))
    common.exit_on_thread_crash("instanceha-controller", stop=stopped.append)
    t = threading.Thread(target=lambda: 1 / 0)
    t.start()
    t.join()
    assert exits == [] and isinstance(stopped[0], ZeroDivisionError)


def test_system_exit_in_a_thread_is_not_a_crash(handlers, monkeypatch):
    exits = []
    monkeypatch.setattr(os, "_exit", lambda status: exits.append(status))
    common.exit_on_thread_crash("instanceha-agent")
    t = threading.Thread(target=lambda: (_ for _ in ()).throw(SystemExit(0)))
    t.start()
    t.join()
    assert exits == []


def test_watched_processes_is_reloadable(tmp_path):
    conf = cfg.ConfigOpts()
    from instanceha.conf import agent

    agent.register_opts(conf)
    path = tmp_path / "agent.conf"
    path.write_text("[agent]\nwatched_processes = nova-compute:nova-compute\n")
    conf(["--config-file", str(path)], default_config_files=[])
    path.write_text("[agent]\nwatched_processes = nova-compute:nova-compute,ovs:ovs-vswitchd\n")
    conf.mutate_config_files()  # what SIGHUP does
    assert conf.agent.watched_processes == {"nova-compute": "nova-compute",
                                            "ovs": "ovs-vswitchd"}
