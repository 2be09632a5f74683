"""The agent's loop, one step at a time, on a fake coordinator."""

import logging

import pytest

from instanceha import exceptions
from instanceha.agent import health
from instanceha.agent.service import Agent, AgentSettings
from instanceha.coordination import ConnectionState
from tests.unit.clock import FakeClock
from tests.unit.fakes import FakeCoordinator


def _agent():
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    services = {"nova-compute": True, "libvirtd": True}
    a = Agent(coord, AgentSettings(host="compute1", heartbeat_interval=0.5,
                                   health_check_interval=2.0, reconnect_max_delay=4.0,
                                   stall_report_after=1.5, hung_after=2.0),
              probe=lambda: dict(services), clock=clock)
    return a, coord, clock, services


@pytest.fixture
def agent():
    """The agent: its session is its liveness."""
    return _agent()


session_agent = agent


def test_first_step_connects_and_joins_then_writes_nothing(agent):
    a, coord, clock, _ = agent
    assert a.step() == 0.5
    assert coord.started == 1
    assert [j[0] for j in coord.joins] == ["compute1"]
    caps = coord.joins[0][1]
    assert caps["services"] == {"nova-compute": True, "libvirtd": True}
    assert {"version", "started_at", "boot_id", "pid"} <= set(caps)
    a.step()
    assert len(coord.joins) == 1 and coord.capability_updates == [] and coord.stalls == []


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
    assert coord.joins == []
    a.step()
    assert len(coord.joins) == 1


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
    coord.join_errors = [err] * 5
    waits = [a.step() for _ in range(5)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert a.step() == 0.5 and len(coord.joins) == 1


def test_not_connected_waits_without_calling_the_coordinator(agent):
    a, coord, _, _ = agent
    a.step()
    coord.set_state(ConnectionState.SUSPENDED)
    coord.joined_flag = False
    a.step()
    assert len(coord.joins) == 1 and coord.capability_updates == []


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


# -- writes only on change, the loop watchdog ---------------------------------------

def test_session_agent_joins_then_writes_nothing_while_nothing_changes(session_agent):
    a, coord, clock, services = session_agent
    for _ in range(20):
        assert a.step() == 0.5
        a.iteration_done(0.5)
        clock.advance(0.5)
    assert len(coord.joins) == 1
    assert coord.capability_updates == [] and coord.stalls == []
    services["libvirtd"] = False
    clock.advance(2.0)
    a.step()
    assert [u["services"]["libvirtd"] for u in coord.capability_updates] == [False]


def _hang(a, clock, seconds, step=0.125):
    """The main loop is stuck for ``seconds``: only the watchdog looks (every
    0.125 s, a binary fraction: no rounding in the sums)."""
    done = []
    for _ in range(int(round(seconds / step))):
        clock.advance(step)
        action = a.watchdog.check(clock())
        if action:
            done.append((action, a.watchdog.stall(clock())))
    return done


def test_watchdog_reports_a_stall_then_the_loop_clears_it(session_agent):
    a, coord, clock, _ = session_agent
    a.step()
    a.iteration_done(0.5)
    # the loop waits 0.5 s, then its next step hangs: stalled since the last one ended
    assert _hang(a, clock, 1.75) == [("reported", 1.625)]
    assert coord.stalls == [1.625]
    assert coord.sessions_ended == 0
    clock.advance(0.25)  # the step returns after a 2.0 s stall: under hung_after + interval
    a.iteration_done(0.5)
    a.step()
    assert coord.stalls[-1] is None  # the report is cleared by the loop itself
    assert coord.sessions_ended == 0 and len(coord.joins) == 1


def test_watchdog_ends_the_session_past_hung_after_and_the_agent_rejoins(session_agent,
                                                                         caplog):
    a, coord, clock, _ = session_agent
    a.step()
    a.iteration_done(0.5)
    with caplog.at_level(logging.WARNING):
        done = _hang(a, clock, 3.0)
    # reported past heartbeat_stale_after, ended past hung_after + one interval
    assert done == [("reported", 1.625), ("ended", 2.625)]
    assert coord.sessions_ended == 1
    assert "ending the coordinator session" in caplog.text
    assert a.watchdog.check(clock()) is None  # ended once
    a.iteration_done(0.5)  # the hung step finally returned
    started = coord.started
    a.step()
    assert coord.started == started + 1  # a new session...
    assert len(coord.joins) == 2  # ...and a new join: a new incarnation
    assert a.watchdog.check(clock()) is None


def test_watchdog_does_not_count_a_planned_back_off_as_a_stall(session_agent):
    a, coord, clock, _ = session_agent
    a.step()
    a.iteration_done(4.0)  # the loop backs off for 4 s (coordinator unreachable)
    assert _hang(a, clock, 4.0) == []
    assert coord.stalls == [] and coord.sessions_ended == 0


def test_watchdog_watches_nothing_before_the_first_step_or_after_shutdown(session_agent):
    a, coord, clock, _ = session_agent
    assert _hang(a, clock, 5.0) == []
    a.step()
    a.iteration_done(0.5)
    a.shutdown()
    assert _hang(a, clock, 5.0) == []
    assert coord.sessions_ended == 0


def test_watchdog_refuses_windows_in_the_wrong_order():
    with pytest.raises(ValueError):
        _agent_with(stall_report_after=2.0, hung_after=1.0)


def _agent_with(**kw):
    clock = FakeClock()
    return Agent(FakeCoordinator(clock), AgentSettings(host="c", **kw), probe=dict,
                 clock=clock)


def test_every_agent_has_its_loop_watchdog(agent):
    a, _, _, _ = agent
    assert a.watchdog is not None
    assert (a.watchdog.report_after, a.watchdog.end_after) == (1.5, 2.5)


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
