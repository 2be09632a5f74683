"""Controllers as real processes: election, fail-over, a frozen leader, a
coordinator restart. Decisions are read from the daemons' own logs."""

import os
import re
import signal
import socket
import time

import pytest
import yaml
from harness import daemons

pytestmark = pytest.mark.functional

GAINED = r"leadership gained by {name} \(token (\d+)\)"
HANDOVER = r"host={host} phase=FAILED action=none token=(\d+)"


def _leader(a, b):
    def who():
        for d in (a, b):
            if re.search(GAINED.format(name=d.name), d.read_log()):
                return d
        return None

    return daemons.wait_until(who, 30, "a controller to lead")


@pytest.mark.fault("Leader controller killed (SIGKILL)", component="controller",
                   expect="the standby leads with a larger fencing token and acts")
def test_standby_takes_over_when_the_leader_is_killed(daemon_factory, fault):
    agent = daemon_factory("agent", "compute1")
    a = daemon_factory("controller", "ctl-a")
    b = daemon_factory("controller", "ctl-b")
    leader = _leader(a, b)
    standby = b if leader is a else a
    standby.wait_log(r"host=compute1 phase=\w+->HEALTHY")  # the standby observes too
    old_token = int(re.search(GAINED.format(name=leader.name), leader.read_log()).group(1))
    killed = time.monotonic()
    leader.kill()
    m = standby.wait_log(GAINED.format(name=standby.name))
    took_over = time.monotonic() - killed
    assert int(m.group(1)) > old_token  # a new term has a larger fencing token
    fault.observed(f"standby led about {took_over:.1f} s after the kill (session timeout 2 s), "
                   f"token {old_token} -> {m.group(1)}")
    # the new leader acts: a host that dies now is handed over by it
    agent.kill()
    m = standby.wait_log(HANDOVER.format(host="compute1"))
    assert int(m.group(1)) > old_token


@pytest.mark.fault("Leader controller frozen (SIGSTOP) past its session, then resumed",
                   component="controller",
                   expect="the standby leads and acts; the resumed old leader notices it lost "
                          "leadership and never hands a host over with its stale term")
def test_frozen_leader_that_resumes_does_not_act(daemon_factory, fault):
    agent = daemon_factory("agent", "compute1")
    a = daemon_factory("controller", "ctl-a")
    b = daemon_factory("controller", "ctl-b")
    leader = _leader(a, b)
    standby = b if leader is a else a
    leader.wait_log(r"host=compute1 phase=\w+->HEALTHY")
    leader.freeze()
    standby.wait_log(GAINED.format(name=standby.name))
    agent.kill()
    standby.wait_log(HANDOVER.format(host="compute1"))
    mark = leader.log_size()
    leader.thaw()
    # the old leader notices, and never hands the host over with its stale term
    leader.wait_log(r"leadership lost by " + leader.name, after=mark)
    leader.wait_log(r"host=compute1 phase=\w+->FAILED", after=mark)
    assert not re.search(HANDOVER.format(host="compute1"), leader.read_log())
    assert leader.proc.poll() is None
    gap = re.search(r"tick started ([\d.]+) s after the previous one", leader.read_log()[mark:])
    fault.observed("the standby handed compute1 over; the resumed leader logged 'leadership "
                   "lost', then compute1 FAILED, 0 hand-overs"
                   + (f"; its first tick after SIGCONT ({gap.group(1)} s gap) acted on nothing"
                      if gap else ""))


@pytest.mark.fault("ZooKeeper (single server) restarted", component="zookeeper",
                   expect="sessions survive a quick restart; no live host FAILED; the "
                          "controller leads again")
def test_coordinator_restart_fails_no_live_host(daemon_factory, zookeeper, fault):
    agents = [daemon_factory("agent", f"compute{i}") for i in (1, 2)]
    ctl = daemon_factory("controller", "ctl-a")
    ctl.wait_log(GAINED.format(name="ctl-a"))
    for i in (1, 2):
        ctl.wait_log(rf"host=compute{i} phase=\w+->HEALTHY")
    mark = ctl.log_size()
    zookeeper.restart()
    # sessions survive a quick restart; agents reconnect and heartbeat again
    for a in agents:
        a.wait_log(r"connected|joined", timeout=30)
    daemons.wait_until(lambda: "leadership gained" in ctl.read_log()[mark:], 30,
                       "the controller to lead again after the restart")
    log_after = ctl.read_log()[mark:]
    assert "->FAILED" not in log_after, log_after
    assert all(a.proc.poll() is None for a in agents)
    phases = re.findall(r"host=(compute\d) phase=\w+->(\w+)", log_after)
    fault.observed(f"no live host FAILED; controller led again; transitions after the "
                   f"restart: {', '.join(f'{h} {p}' for h, p in phases) or 'none'}")


def test_session_timeout_the_server_cannot_grant_refuses_to_start(daemon_factory):
    # the test server's tickTime is 200 ms: it grants at most 20 x 0.2 = 4 s
    # (hung_after outlasts a cut-off leader's notice, 0.5 + 2/3 x 10 s: only the grant is wrong)
    ctl = daemon_factory("controller", "ctl-a", extra={"coordination": {"session_timeout": 10},
                                                       "detection": {"hung_after": 8}})
    assert ctl.proc.wait(30) == 2
    assert "[coordination] session_timeout" in ctl.output()
    assert "granted a session timeout of 4.0 s" in ctl.output()


@pytest.mark.parametrize("kind", ["controller", "agent"])
def test_hung_after_a_cut_off_leader_reaches_first_refuses_to_start(kind, daemon_factory,
                                                                    tmp_path):
    """A 3 s session timeout (the test server would grant it) lets a leader cut
    off from ZooKeeper go on for up to 2 s before its client notices; with
    hung_after at its default 2.0 s and heartbeats every 0.5 s, it would
    declare live hosts FAILED first. Both daemons refuse, before connecting."""
    d = daemon_factory(kind, f"{kind}-x", extra={"coordination": {"session_timeout": 3}})
    assert d.proc.wait(30) == 2
    out = d.output()
    assert "refusing to start" in out
    assert "[detection] hung_after" in out and "[coordination] session_timeout" in out
    assert str(tmp_path / f"{kind}-x.conf") in out


@pytest.mark.fault("Nova's notification broker unreachable while the controller stops",
                   component="controller",
                   expect="the leader goes on without the notifications (evacuations are "
                          "checked by reading Nova) and still stops on SIGTERM")
def test_a_leader_whose_nova_bus_is_unreachable_stops_on_sigterm(daemon_factory, tmp_path,
                                                                  fault):
    """oslo.messaging's listener start() tries a broker that refuses for ever;
    it ran on a ThreadPoolExecutor thread, which the interpreter joins at exit:
    the controller logged its stop and never exited."""
    closed = []
    for _ in range(2):  # two ports nothing listens on: the broker and keystone
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed.append(s.getsockname()[1])
    inv = tmp_path / "fencing-inventory.yaml"
    inv.write_text(yaml.safe_dump({"hosts": {"compute1": {"driver": "fake",
                                                          "address": "fake-compute1"}}}))
    os.chmod(inv, 0o600)
    ctl = daemon_factory("controller", "ctl-a", extra={
        "fencing": {"inventory_file": str(inv), "test_only_allow_fake_driver": True},
        "nova": {"auth_type": "password", "auth_url": f"http://127.0.0.1:{closed[1]}/v3",
                 "username": "ih", "password": "not-used", "project_name": "service",
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "nova_notifications": {"transport_url": f"rabbit://ih:not-used@127.0.0.1:{closed[0]}/"},
    })
    ctl.wait_log(GAINED.format(name="ctl-a"))
    ctl.wait_log(r"impl_rabbit .*Connection failed")  # oslo.messaging tries the broker
    stopped = time.monotonic()
    ctl.signal(signal.SIGTERM)
    assert ctl.proc.wait(60) == 0, ctl.output()[-2000:]
    assert "did not stop within" in ctl.read_log()
    assert "not-used" not in ctl.read_log() + ctl.output()
    fault.observed(f"exited {time.monotonic() - stopped:.1f} s after SIGTERM, the listener's "
                   f"start still trying the broker")
