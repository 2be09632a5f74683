"""The agent's loop, one step at a time, on a fake coordinator."""

import logging

import pytest

from instanceha import exceptions
from instanceha.agent import health
from instanceha.agent.service import Agent, AgentSettings
from instanceha.coordination import ConnectionState
from tests.unit.fakes import FakeClock, FakeCoordinator


@pytest.fixture
def agent():
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    services = {"nova-compute": True, "libvirtd": True}
    a = Agent(coord, AgentSettings(host="compute1", heartbeat_interval=0.5,
                                   health_check_interval=2.0, reconnect_max_delay=4.0),
              probe=lambda: dict(services), clock=clock)
    return a, coord, clock, services


def test_first_step_connects_joins_and_heartbeats(agent):
    a, coord, clock, _ = agent
    assert a.step() == 0.5
    assert coord.started == 1
    assert [j[0] for j in coord.joins] == ["compute1"]
    caps = coord.joins[0][1]
    assert caps["services"] == {"nova-compute": True, "libvirtd": True}
    assert {"version", "started_at", "boot_id", "pid"} <= set(caps)
    assert coord.beats == [1]
    a.step()
    assert coord.beats == [1, 2] and len(coord.joins) == 1


def test_rejoins_when_the_membership_is_gone(agent):
    a, coord, _, _ = agent
    a.step()
    coord.joined_flag = False  # session expired: kazoo opened a new one silently
    a.step()
    assert len(coord.joins) == 2 and a.joins == 2


def test_waits_out_the_previous_session_and_logs_once(agent, caplog):
    a, coord, _, _ = agent
    conflict = exceptions.MemberConflict(member="compute1", owner="0xabc")
    coord.join_errors = [conflict, conflict, conflict]
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert a.step() == 0.5
    assert caplog.text.count("already present") == 1
    assert coord.beats == []
    a.step()
    assert len(coord.joins) == 1 and coord.beats == [1]


def test_health_change_is_published_at_next_check(agent):
    a, coord, clock, services = agent
    a.step()
    services["nova-compute"] = False
    clock.advance(0.5)
    a.step()
    assert coord.capability_updates == []  # not due yet
    clock.advance(1.5)
    a.step()
    assert coord.capability_updates[-1]["services"]["nova-compute"] is False


def test_backoff_doubles_and_is_capped_then_resets(agent):
    a, coord, _, _ = agent
    err = exceptions.CoordinatorUnavailable(where="zk", reason="ConnectionLoss")
    coord.heartbeat_errors = [err] * 5
    waits = [a.step() for _ in range(5)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert a.step() == 0.5


def test_not_connected_waits_without_calling_the_coordinator(agent):
    a, coord, _, _ = agent
    a.step()
    coord.set_state(ConnectionState.SUSPENDED)
    a.step()
    assert coord.beats == [1]


def test_planned_shutdown_announces_itself(agent):
    a, coord, _, _ = agent
    a.step()
    a.shutdown(planned=True, reason="SIGTERM")
    assert coord.left == [("SIGTERM", True)]
    assert a.stopping.is_set()


def test_rejected_session_timeout_is_not_retried(agent):
    a, coord, _, _ = agent
    coord.start_errors = [exceptions.SessionTimeoutRejected(granted=4.0, requested=2.0)]
    with pytest.raises(exceptions.SessionTimeoutRejected):
        a.step()


def test_process_probe_reads_proc(tmp_path):
    for pid, cmd, state in ((10, b"/usr/bin/python3\0/usr/bin/nova-compute\0", "S"),
                            (11, b"/usr/sbin/libvirtd\0", "Z"),
                            (12, b"", "S")):
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "cmdline").write_bytes(cmd)
        (d / "stat").write_text(f"{pid} (x y) {state} 1 2 3")
    (tmp_path / "self").mkdir()
    probe = health.ProcessProbe({"nova-compute": "nova-compute", "libvirtd": "libvirtd"},
                                proc_root=str(tmp_path))
    # libvirtd's only process is a zombie: not running
    assert probe() == {"nova-compute": True, "libvirtd": False}
