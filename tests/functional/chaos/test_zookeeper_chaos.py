"""Chaos on the coordination path: a leader cut off from ZooKeeper, a 3-node
ensemble losing a server or its quorum.

Real ZooKeeper (Debian package), real agents and controllers (processes).
No fencing inventory is configured, so a controller that hands a host over to
fencing logs ``host=H phase=FAILED action=none token=N`` (the log-only
actuator, after ``verify()``): that line is the "fence" these tests count.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from harness import daemons, procs

from instanceha import exceptions
from instanceha.coordination import ConnectionState
from tests.functional.chaos import logs

pytestmark = pytest.mark.functional

LIVE = ("compute1", "compute2")


def _start_cluster(daemon_factory, url_a: str, url_rest: str,
                   hosts=("compute1", "compute2", "compute3"), ctl_extra=None):
    """Agents on ``url_rest``; ctl-a (on ``url_a``) leads, ctl-b stands by."""
    agents = {n: daemon_factory("agent", n, extra=logs.coordination(url_rest)) for n in hosts}
    a = logs.lead_first(daemon_factory, "ctl-a", dict(ctl_extra or {}, **logs.coordination(url_a)))
    b = daemon_factory("controller", "ctl-b",
                       extra=dict(ctl_extra or {}, **logs.coordination(url_rest)))
    for d in (a, b):
        for n in hosts:
            d.wait_log(rf"host={n} phase=\w+->HEALTHY")
    return agents, a, b


def _handed(ctls, host: str, after: dict) -> list[tuple[str, int, float]]:
    return [(d.name, tok, at) for d in ctls for h, tok, at in logs.handovers(d, after[d.name])
            if h == host]


def _fmt_phases(seen: list[str]) -> str:
    return "->".join(seen) if seen else "no change"


# -- a leader controller cut off from ZooKeeper ---------------------------------

CUT_EXPECT = ("the cut-off leader stops acting within one tick and never hands a host over "
              "again; the standby takes over; a host killed meanwhile is fenced once, by the "
              "standby; no live host is fenced")


@pytest.mark.parametrize("how", [
    pytest.param("blackhole", id="blackhole", marks=pytest.mark.fault(
        "Leader controller's link to ZooKeeper black-holed (no FIN, no RST)",
        component="controller", expect=CUT_EXPECT)),
    pytest.param("reset", id="reset", marks=pytest.mark.fault(
        "Leader controller's link to ZooKeeper reset (every connection refused)",
        component="controller", expect=CUT_EXPECT)),
])
def test_leader_cut_off_from_zookeeper(how, fault, zookeeper, daemon_factory, proxy_factory):
    proxy = proxy_factory(zookeeper.client_port)
    agents, a, b = _start_cluster(daemon_factory, f"zookeeper://{proxy.address}",
                                  zookeeper.url, hosts=("compute1", "compute2"))
    old_token = logs.token(a)
    mark = {"ctl-a": a.log_size(), "ctl-b": b.log_size()}

    cut = time.time()
    getattr(proxy, how)()
    stopped = logs.event_time(a, logs.LOST.format(name="ctl-a"), after=mark["ctl-a"])
    noticed = logs.event_time(a, r"Connection dropped|Zookeeper connection lost",
                              after=mark["ctl-a"])
    gained = logs.event_time(b, logs.GAINED.format(name="ctl-b"), after=mark["ctl-b"])
    assert logs.token(b) > old_token
    # log lines carry milliseconds: clamp the rounding below zero
    fault.observed(f"cut-off leader's client noticed {max(0.0, noticed - cut):.2f} s after the "
                   f"cut, the leader dropped leadership {max(0.0, stopped - noticed):.2f} s "
                   f"later (tick 0.1 s); "
                   f"standby led {gained - cut:.2f} s after the cut")

    # a real failure while the old leader is still cut off: only the standby may act
    killed = time.time()
    agents["compute1"].kill()
    m = b.wait_log(r"host=compute1 phase=FAILED action=none token=(\d+)", after=mark["ctl-b"])
    assert int(m.group(1)) == logs.token(b)
    fenced = logs.log_time(b.read_log(), m.start())
    fault.observed(f"compute1 killed during the cut: handed over by the standby "
                   f"{fenced - killed:.2f} s after the kill")

    # the link heals: the old leader comes back as a standby and sees compute1 failed
    back = a.log_size()
    proxy.restore()
    a.wait_log(r"host=compute1 phase=\w+->FAILED", after=back)
    expired = "Session has expired" in a.read_log()[mark["ctl-a"]:]

    assert _handed([a], "compute1", mark) == [], "the cut-off leader handed compute1 over"
    assert len(_handed([a, b], "compute1", mark)) == 1, "compute1 handed over more than once"
    assert _handed([a, b], "compute2", mark) == [], "a live host was handed over"
    assert not logs.leads(a) and logs.leads(b)
    assert not re.search(logs.GAINED.format(name="ctl-a"), a.read_log()[mark["ctl-a"]:])
    assert "FAILED" not in logs.phases(b, "compute2", mark["ctl-b"])
    view = _fmt_phases(logs.phases(a, "compute2", mark["ctl-a"]))
    fault.observed(
        f"hand-overs: compute1 1 (standby), 0 by the cut-off leader; compute2 (alive) 0; "
        f"cut-off leader's view of compute2: {view}; on reconnect its session "
        f"{'had expired' if expired else 'survived'}")


@pytest.mark.fault(
    "ZooKeeper call made while the client's link is black-holed", component="coordination",
    expect="the call fails at once (coordinator unavailable); it does not wait for the link")
def test_call_while_disconnected_fails_at_once(fault, zookeeper, proxy_factory, root_path):
    proxy = proxy_factory(zookeeper.client_port)
    zookeeper.provision(root_path, [])
    coord = zookeeper.coordinator("controller", url=f"zookeeper://{proxy.address}",
                                  session_timeout=2.0, root_path=root_path)
    coord.start()
    try:
        coord.publish_status({"leader": "me"})
        cut = time.monotonic()
        proxy.blackhole()
        daemons.wait_until(lambda: coord.state is not ConnectionState.CONNECTED, 10,
                           "the client to notice the black hole")
        noticed = time.monotonic()
        outcome = {}

        def call():
            try:
                coord.publish_status({"leader": "me", "again": True})
                outcome["result"] = "written"
            except exceptions.CoordinationError as e:
                outcome["result"] = e
            outcome["at"] = time.monotonic()

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(10)
        blocked = worker.is_alive()
        proxy.restore()  # a blocked call can end now: the test does not leak it
        worker.join(10)
        assert not blocked, "the call waited for the link to come back"
        assert isinstance(outcome["result"], exceptions.CoordinatorUnavailable), outcome
        fault.observed(f"client noticed the black hole {noticed - cut:.2f} s after it; a "
                       f"status write then failed in {outcome['at'] - noticed:.3f} s "
                       f"({outcome['result']})")
    finally:
        coord.stop()


# -- a 3-node ensemble loses one server ------------------------------------------

def _server_of(d: daemons.Daemon, ensemble):
    ports = procs.tcp_peer_ports(d.pid) & {s.client_port for s in ensemble.servers}
    assert len(ports) == 1, f"{d.name} is connected to {ports}"
    return ensemble.by_port(ports.pop())


@pytest.mark.parametrize("victim", [
    pytest.param("controller", id="leader-controllers-server", marks=pytest.mark.fault(
        "ZooKeeper ensemble (3) loses the server the leader controller is connected to",
        component="zookeeper",
        expect="no live host FAILED or fenced; a host killed afterwards is detected and fenced "
               "once; a controller leads again")),
    pytest.param("zk-leader", id="zookeeper-leader", marks=pytest.mark.fault(
        "ZooKeeper ensemble (3) loses its leader server (SIGKILL)",
        component="zookeeper",
        expect="no live host FAILED or fenced; a host killed afterwards is detected and fenced "
               "once; a controller leads again")),
])
def test_ensemble_loses_one_server(victim, fault, ensemble, daemon_factory):
    agents, a, b = _start_cluster(daemon_factory, ensemble.url, ensemble.url)
    old_token = logs.token(a)
    server = _server_of(a, ensemble) if victim == "controller" else ensemble.leader()
    role = server.mode()
    uses = _server_of(a, ensemble) is server
    mark = {"ctl-a": a.log_size(), "ctl-b": b.log_size()}

    lost = time.time()
    server.kill()
    ensemble.wait_serving(ensemble.running())
    serving = time.time()
    leader = daemons.wait_until(lambda: next((d for d in (a, b) if logs.leads(d)), None), 30,
                                "a controller to lead")
    if leader is a and re.search(logs.GAINED.format(name="ctl-a"), a.read_log()[mark["ctl-a"]:]):
        regained = logs.event_time(a, logs.GAINED.format(name="ctl-a"), after=mark["ctl-a"])
        lead_note = f"ctl-a lost and re-took leadership after {regained - lost:.2f} s"
    elif leader is a:
        lead_note = "ctl-a kept leadership throughout"
    else:
        lead_note = "leadership moved to ctl-b"
    # every agent keeps its session through the loss (each reconnects to another server)
    live_ports = {s.client_port for s in ensemble.running()}
    for n in LIVE:
        daemons.wait_until(lambda n=n: procs.tcp_peer_ports(agents[n].pid) & live_ports, 20,
                           f"{n} to be connected to a live server")

    # a host that dies now is still detected and fenced once
    ctls = (a, b)
    killed = time.time()
    agents["compute3"].kill()
    (by, _, fenced), = daemons.wait_until(lambda: _handed(ctls, "compute3", mark), 30,
                                          "compute3 to be handed over")
    for n in LIVE:
        assert _handed(ctls, n, mark) == [], f"live {n} handed over"
        for d in ctls:
            assert "FAILED" not in logs.phases(d, n, mark[d.name]), f"{d.name} failed live {n}"
    assert len(_handed(ctls, "compute3", mark)) == 1
    assert all(agents[n].proc.poll() is None for n in LIVE)
    rejoined = [n for n in LIVE if "join #2" in agents[n].read_log()]
    seen = {n: _fmt_phases(logs.phases(leader, n, mark[leader.name])) for n in LIVE}
    fault.observed(
        f"killed a {role} ({'the one' if uses else 'not the one'} ctl-a used); ensemble "
        f"serving again {serving - lost:.2f} s later; {lead_note}"
        f"{'' if logs.token(leader) == old_token else ' (new token)'}")
    fault.observed(f"live hosts: 0 FAILED, 0 fenced, re-joined: {rejoined or 'none'}; leader's "
                   f"view: {seen}; compute3 killed afterwards: fenced once (by {by}), "
                   f"{fenced - killed:.2f} s after the kill")


# -- a 3-node ensemble loses its quorum -----------------------------------------

@pytest.mark.fault(
    "ZooKeeper ensemble (3) loses quorum (2 servers killed) for 2 x the session timeout, "
    "then gets it back",
    component="zookeeper",
    expect="the leader stops acting; nothing is fenced while quorum is lost; when it returns "
           "no live host is declared FAILED or fenced and a host that died during the outage "
           "is fenced once")
def test_ensemble_loses_quorum(fault, ensemble, daemon_factory):
    # the guard out of the way: detection alone must not fail a live host
    unguarded = {"controller": {"max_failed_hosts": 100, "max_failed_percent": 100}}
    agents, a, b = _start_cluster(daemon_factory, ensemble.url, ensemble.url,
                                  ctl_extra=unguarded)
    mark = {"ctl-a": a.log_size(), "ctl-b": b.log_size()}
    leader_zk = ensemble.leader()
    victims = [leader_zk] + [s for s in ensemble.servers if s is not leader_zk][:1]

    lost = time.time()
    for s in victims:
        s.kill()
    stopped = logs.event_time(a, logs.LOST.format(name="ctl-a"), after=mark["ctl-a"])
    fault.observed(f"leader dropped leadership {stopped - lost:.2f} s after quorum was lost")
    # a host dies during the outage: nobody can (or may) act on it now
    agents["compute3"].kill()
    time.sleep(4.0)  # the outage lasts 2 x session_timeout
    ctls = (a, b)
    during = {d.name: logs.handovers(d, mark[d.name]) for d in ctls}
    assert during == {"ctl-a": [], "ctl-b": []}, during
    assert not any(logs.leads(d) for d in ctls)

    for s in victims:
        s.start(wait=False)
    ensemble.wait_serving()
    back = time.time()
    leader = daemons.wait_until(lambda: next((d for d in ctls if logs.leads(d)), None), 30,
                                "a controller to lead again")
    relead = logs.event_time(leader, logs.GAINED.format(name=leader.name),
                             after=mark[leader.name])
    (by, _, fenced), = daemons.wait_until(lambda: _handed(ctls, "compute3", mark), 30,
                                          "compute3 to be handed over")
    # the live agents are back (re-joined or on their old sessions) and healthy
    for n in LIVE:
        daemons.wait_until(lambda n=n: (logs.phases(leader, n, mark[leader.name]) or
                                        ["HEALTHY"])[-1] == "HEALTHY", 30, f"{n} HEALTHY")

    for n in LIVE:
        assert _handed(ctls, n, mark) == [], f"live {n} handed over after quorum returned"
        for d in ctls:
            assert "FAILED" not in logs.phases(d, n, mark[d.name]), f"{d.name} failed live {n}"
    assert len(_handed(ctls, "compute3", mark)) == 1
    rejoined = [n for n in LIVE if "join #2" in agents[n].read_log()]
    seen = {n: _fmt_phases(logs.phases(leader, n, mark[leader.name])) for n in LIVE}
    fault.observed(
        f"0 hand-overs during the {back - lost:.1f} s outage; {leader.name} led "
        f"{relead - back:.2f} s after quorum returned; compute3 (killed during the outage) "
        f"fenced once (by {by}), {fenced - back:.2f} s after quorum returned")
    fault.observed(f"live hosts: 0 FAILED, 0 fenced; re-joined with a new session: "
                   f"{rejoined or 'none'}; leader's view: {seen}")
