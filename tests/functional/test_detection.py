"""The failure detector end to end: real agents (processes), a real ZooKeeper."""

import os
import signal
import subprocess
import sys
import time

import harness
import pytest
from harness import daemons

from instanceha.engine.model import DetectionPolicy

pytestmark = pytest.mark.functional
HANG_AGENT = os.path.join(os.path.dirname(harness.__file__), "hang_agent.py")


def _entered(observer, host, phase, since):
    """Seconds from ``since`` (monotonic) to the observer's first decision of
    ``phase`` for ``host`` after it."""
    with observer.lock:
        at = [t.at for t in observer.transitions
              if t.host == host and t.after.phase.value == phase and t.at >= since]
    return at[0] - since


def test_join_then_planned_stop_is_not_a_crash(daemon_factory, observer):
    agent = daemon_factory("agent", "compute1")
    observer.wait_phase("compute1", "HEALTHY")
    view = observer.view("compute1")
    assert view.incarnation is not None
    snap = observer.coordinator.snapshot()
    caps = snap.members["compute1"].capabilities
    assert caps["services"] == {"init": True} or caps["services"] == {"init": False}
    assert caps["boot_id"] and caps["version"]
    agent.signal(signal.SIGTERM)
    observer.wait_phase("compute1", "STOPPED")
    assert agent.proc.wait(10) == 0
    # wait past every detection window: a planned stop never becomes SUSPECT/FAILED
    daemons.wait_until(lambda: observer.coordinator.snapshot().heartbeat_age("compute1") > 3.0,
                       10, "heartbeat age to pass the hung window")
    observer.reconciler.tick(act=False)
    assert observer.phase("compute1") == "STOPPED"
    assert "FAILED" not in observer.phases_seen("compute1")
    assert "SUSPECT" not in observer.phases_seen("compute1")


@pytest.mark.fault("Agent killed (SIGKILL), not restarted, no second source of liveness",
                   component="agent",
                   expect="FAILED by the dead rule (membership lost, and silent for the "
                          "session timeout its expiry proves) after about one session "
                          "timeout; handed to fencing (with a second source the host is "
                          "asked first: see the agent-death tests)")
def test_sigkill_is_failed_by_membership_and_heartbeat(daemon_factory, observer_factory,
                                                       fault):
    # a hung window far away: only the two-signal rule (membership + heartbeat) can fire
    observer = observer_factory(DetectionPolicy(hung_after=30.0))
    agent = daemon_factory("agent", "compute1")
    observer.wait_phase("compute1", "HEALTHY")
    killed = time.monotonic()
    agent.kill()
    observer.wait_phase("compute1", "FAILED")
    assert observer.view("compute1").rule == "dead"
    assert "compute1" not in observer.coordinator.snapshot().members
    # the executor acts right after the views are published in the same tick
    daemons.wait_until(lambda: observer.handler.calls, 5, "the hand-over")
    assert observer.handler.calls[0][:2] == ("compute1", "dead")
    fault.observed(f"FAILED (rule dead) {_entered(observer, 'compute1', 'FAILED', killed):.2f} s "
                   f"after SIGKILL (session timeout 2 s); phases "
                   f"{'->'.join(observer.phases_seen('compute1'))}; handed to fencing")


@pytest.mark.fault("Agent hung (SIGSTOP), then resumed", component="agent",
                   expect="FAILED while frozen; once resumed, the agent re-joins as a new "
                          "incarnation and the host is HEALTHY again")
def test_sigstop_is_failed_then_rejoins_after_session_expiry(daemon_factory, observer, fault):
    agent = daemon_factory("agent", "compute1")
    observer.wait_phase("compute1", "HEALTHY")
    first = observer.view("compute1").incarnation
    frozen = time.monotonic()
    agent.freeze()
    observer.wait_phase("compute1", "FAILED")
    rule = observer.view("compute1").rule
    daemons.wait_until(lambda: "compute1" not in observer.coordinator.snapshot().members, 10,
                       "the frozen agent's session to expire")
    mark = agent.log_size()
    thawed = time.monotonic()
    agent.thaw()
    agent.wait_log(r"joined as compute1 \(incarnation \d+, join #2\)", after=mark)
    observer.wait_phase("compute1", "HEALTHY")
    assert observer.view("compute1").incarnation != first
    assert any(t.after.rejoined for t in observer.transitions if t.host == "compute1")
    fault.observed(f"FAILED (rule {rule}) {_entered(observer, 'compute1', 'FAILED', frozen):.2f} s "
                   f"after SIGSTOP; resumed after its session expired: re-joined as a new "
                   f"incarnation, HEALTHY "
                   f"{_entered(observer, 'compute1', 'HEALTHY', thawed):.2f} s after SIGCONT")


@pytest.mark.fault("Agent main loop hung, its ZooKeeper session alive", component="agent",
                   expect="FAILED by the hung rule (silent past hung_after while the membership "
                          "lives: the agent's loop watchdog reported the stall); the watchdog then "
                          "ends the session; once the loop resumes the agent re-joins, HEALTHY")
def test_hung_main_loop_is_failed_while_session_lives(daemon_factory, observer, tmp_path, fault):
    flag = tmp_path / "hang"
    agent = daemon_factory(
        "agent", "compute1",
        extra={"agent": {"health_check_interval": 0.1}},
        argv_prefix=[sys.executable, HANG_AGENT],
        env={"INSTANCEHA_TEST_HANG_FILE": str(flag)},
    )
    observer.wait_phase("compute1", "HEALTHY")
    first = observer.view("compute1").incarnation
    mark = agent.log_size()
    hung = time.monotonic()
    flag.write_text("hang")
    observer.wait_phase("compute1", "FAILED")
    # the hung rule needs the membership alive: the dead rule comes first otherwise
    assert observer.view("compute1").rule == "hung"
    agent.wait_log(r"main loop stalled for [\d.]+ s \(> 1\.5 s\): reported", after=mark)
    # the stall goes on past hung_after + one interval: the watchdog ends the session
    agent.wait_log(r"main loop stalled for [\d.]+ s \(> 2\.5 s\): ending the coordinator "
                   r"session", after=mark)
    daemons.wait_until(lambda: "compute1" not in observer.coordinator.snapshot().members, 5,
                       "the membership to go with the ended session")
    assert observer.phase("compute1") == "FAILED"
    resumed = time.monotonic()
    flag.unlink()
    agent.wait_log(r"joined as compute1 \(incarnation \d+, join #2\)", after=mark)
    observer.wait_phase("compute1", "HEALTHY")
    assert observer.view("compute1").incarnation != first
    assert agent.proc.poll() is None
    fault.observed(f"FAILED (rule hung, membership still present) "
                   f"{_entered(observer, 'compute1', 'FAILED', hung):.2f} s after the loop hung; "
                   f"the watchdog ended the session; HEALTHY (new incarnation) "
                   f"{_entered(observer, 'compute1', 'HEALTHY', resumed):.2f} s after it resumed")


def test_a_steady_agent_sends_only_pings(daemon_factory, observer, zookeeper, root_path):
    """Liveness = session: once joined and its health known, the agent sends
    ZooKeeper nothing but kazoo's pings (no request, so no write), and stays
    HEALTHY."""
    agent = daemon_factory("agent", "compute1")
    observer.wait_phase("compute1", "HEALTHY")
    client = observer.coordinator.client
    daemons.wait_until(lambda: observer.coordinator.snapshot().members["compute1"]
                       .capabilities.get("services", {}).get("init") is not None, 10,
                       "the agent's first health check")
    caps = observer.coordinator.snapshot().members["compute1"].capabilities
    assert caps["session_timeout"] == 2.0
    _, member = client.get(f"{root_path}/hosts/compute1/member")
    sid = member.ephemeralOwner
    before = zookeeper.connections()[sid]
    started = time.monotonic()
    # eight iterations of the agent's loop (0.5 s), two session timeouts
    daemons.wait_until(lambda: time.monotonic() - started > 4.0, 10, "4 s of steady state")
    after = zookeeper.connections()[sid]
    assert after["lcxid"] == before["lcxid"], (before, after)  # not one request
    assert int(after["recved"]) > int(before["recved"])  # ... but pings
    _, again = client.get(f"{root_path}/hosts/compute1/member")
    assert (again.mzxid, again.version) == (member.mzxid, member.version)
    assert observer.phase("compute1") == "HEALTHY"
    assert observer.phases_seen("compute1")[-1] == "HEALTHY"
    assert agent.proc.poll() is None


def test_restart_with_same_id_waits_out_previous_session(daemon_factory, observer):
    first = daemon_factory("agent", "compute1")
    observer.wait_phase("compute1", "HEALTHY")
    inc1 = observer.view("compute1").incarnation
    # the second starts while the first's session lives (its start-up may take
    # longer than the 2 s session on a loaded machine: then it would never meet it)
    second = daemon_factory("agent", "compute1-second", extra={"DEFAULT": {"host": "compute1"}})
    second.wait_log(r"already present with another session")
    first.kill()
    joined = second.wait_log(r"joined as compute1 \(incarnation (\d+), join #1\)")
    inc2 = int(joined.group(1))
    assert inc2 != inc1
    # the observer was HEALTHY on the first's incarnation all along: wait for the
    # watch that brings the second's (checking the phase alone raced with it)
    daemons.wait_until(
        lambda: (observer.view("compute1").incarnation == inc2
                 and observer.phase("compute1") == "HEALTHY"),
        20, f"the observer to see compute1 HEALTHY on incarnation {inc2}")
    assert second.proc.poll() is None


@pytest.mark.fault("Agent killed (SIGKILL) and restarted at once, as systemd does",
                   component="agent",
                   expect="the new process resumes the session its session file holds: the "
                          "membership never vanishes (same incarnation), the host stays HEALTHY")
def test_killed_agent_restarted_at_once_resumes_its_session(daemon_factory, observer, fault):
    # a 4 s session: this test checks the mechanism, whatever the machine's load;
    # the restart-to-resumed time against the 2 s default is agent_restart_bench's
    agent = daemon_factory("agent", "compute1", extra={
        "coordination": {"session_timeout": 4.0}, "detection": {"hung_after": 4.0}})
    observer.wait_phase("compute1", "HEALTHY")
    inc = observer.view("compute1").incarnation
    session_file = os.path.join(agent.workdir, "compute1.session")
    assert os.stat(session_file).st_mode & 0o777 == 0o600
    old_pid, mark = agent.pid, agent.log_size()
    agent.kill()
    agent.start()  # Restart=always
    agent.wait_log(r"resumed session 0x[0-9a-f]+ of the previous run of this agent \(pid "
                   rf"{old_pid}, saved [\d.]+ s ago\): its membership never left", after=mark)
    agent.wait_log(rf"joined as compute1 \(incarnation {inc}, join #1\): the membership of "
                   r"the resumed session, kept", after=mark)
    daemons.wait_until(lambda: observer.coordinator.snapshot().members["compute1"]
                       .capabilities.get("pid") == agent.pid, 10,
                       "the new process's pid in the membership")
    observer.reconciler.tick(act=False)
    assert observer.phases_seen("compute1") == ["HEALTHY"]
    assert observer.view("compute1").incarnation == inc
    assert observer.handler.calls == []
    log = agent.read_log()
    assert "passw" not in log.lower()
    fault.observed(f"resumed the session of pid {old_pid}: same incarnation {inc}, phases "
                   f"{'->'.join(observer.phases_seen('compute1'))}, 0 hand-overs")


def test_new_controller_knows_a_host_that_died_before_it_started(daemon_factory,
                                                                 observer_factory):
    first = observer_factory()
    agent = daemon_factory("agent", "compute2")
    first.wait_phase("compute2", "HEALTHY")
    agent.kill()
    daemons.wait_until(lambda: "compute2" not in first.coordinator.snapshot().members, 10,
                       "the killed agent's session to expire")
    # a controller that never saw compute2 alive: the registry still names it, and
    # it is failed only after a full window of this controller's own observation
    late = observer_factory()
    late.wait_phase("compute2", "FAILED")
    seen = late.phases_seen("compute2")
    assert seen[0] == "SUSPECT" and seen[-1] == "FAILED"


def test_host_joining_a_long_running_controller_is_never_failed_on_first_sight(
        daemon_factory, observer):
    # the observer has been watching for longer than the hung window
    daemons.wait_until(lambda: observer.coordinator.snapshot().connected_for > 3.0, 10,
                       "the observer to run past the hung window")
    daemon_factory("agent", "compute3")
    observer.wait_phase("compute3", "HEALTHY")
    assert set(observer.phases_seen("compute3")) <= {"SUSPECT", "HEALTHY"}
    assert observer.handler.calls == []


@pytest.mark.fault("nova-compute dead, the agent alive", component="agent",
                   expect="DEGRADED, never FAILED: the host is not fenced")
def test_nova_compute_crash_is_degraded_not_failed(daemon_factory, observer, tmp_path, fault):
    token = f"fake-nova-compute-{tmp_path.name}"
    fake = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(600)", token])
    try:
        daemon_factory("agent", "compute1", extra={"agent": {
            "watched_processes": f"nova-compute:{token}", "health_check_interval": 0.2}})
        observer.wait_phase("compute1", "HEALTHY")
        crashed = time.monotonic()
        fake.kill()
        fake.wait()
        observer.wait_phase("compute1", "DEGRADED")
        assert "nova-compute not running" in observer.view("compute1").reason
        # past the hung window: still DEGRADED, never FAILED, nothing handed over
        daemons.wait_until(lambda: time.monotonic() - crashed > 3.0, 10, "the hung window")
        assert observer.phase("compute1") == "DEGRADED"
        assert "FAILED" not in observer.phases_seen("compute1")
        assert observer.handler.calls == []
        fault.observed(f"DEGRADED {_entered(observer, 'compute1', 'DEGRADED', crashed):.2f} s "
                       f"after nova-compute died (probe every 0.2 s); still DEGRADED 3 s later; "
                       f"phases {'->'.join(observer.phases_seen('compute1'))}; 0 hand-overs")
    finally:
        fake.kill()
        fake.wait()


def test_agent_started_before_the_coordinator_joins_when_it_comes(tmp_path, root_path):
    from harness.zookeeper import ZooKeeperServer

    zk = ZooKeeperServer(str(tmp_path / "late-zk"), tick_ms=200)  # port chosen, not started
    sections = {
        "DEFAULT": {"host": "compute9"},
        "coordination": zk.section("agent", "compute9", root_path=root_path,
                                   connect_timeout=1.0, reconnect_max_delay=1.0),
        "agent": {"watched_processes": "init:/sbin/init"},
        "telemetry": {"enabled": "false"},
    }
    agent = daemons.Daemon.instanceha("instanceha-agent", str(tmp_path), "late", sections).start()
    try:
        agent.wait_log(r"is unreachable: .*retry later, next try in")
        zk.start()
        zk.provision(root_path, ["compute9"])  # as the leading controller does
        agent.wait_log(r"joined as compute9 \(incarnation \d+, join #1\)")
        assert agent.proc.poll() is None
    finally:
        agent.terminate()
        zk.stop()
