"""The controller's view of layout 2 on a real, secure ZooKeeper, in process.

* a connection loss costs a re-list of the four indexes, not a read per host
  (counted by the view's own read counter: its requests, not time), and the
  re-listed view is published before the capabilities' watches are re-armed;
* a membership lost while the controller was cut off is found by the re-list;
* the controller's loop re-lists on the reconnection itself, not at its next
  tick (a real ``ControllerService.run()`` with a 60 s tick);
* an index entry or a stall report of another host's session is ignored and
  reported as an alert; an entry whose session ended while it was being
  verified is not;
* an index entry deleted while its session's member node stands is
  tampering, not a death; a member node deleted by its session's end, seen
  together with the host's re-join, is not.
"""

from __future__ import annotations

import threading
import time

import pytest
from harness import daemons
from harness.tcpproxy import TcpProxy

from instanceha.controller.recovery import ActuatorSettings, RecoveryActuator
from instanceha.controller.service import ControllerService, ControllerSettings
from instanceha.coordination.base import ALIVE_NOW, ConnectionState
from instanceha.coordination.zk_codec import dumps
from instanceha.engine.model import DetectionPolicy

pytestmark = pytest.mark.functional
N = 40


@pytest.fixture
def proxy(zookeeper):
    p = TcpProxy("127.0.0.1", zookeeper.client_port).start()
    yield p
    p.stop()


@pytest.fixture
def agents(zookeeper, root_path):
    hosts = [f"h{i:03d}" for i in range(N)]
    zookeeper.provision(root_path, hosts)
    made = {}
    for h in hosts:
        a = zookeeper.coordinator("agent", h, root_path=root_path)
        a.start()
        a.join(h, {"services": {"nova-compute": True}})
        made[h] = a
    yield made
    for a in made.values():
        a.stop()


def _view(zookeeper, root_path, url=None):
    c = zookeeper.coordinator("controller", url=url, root_path=root_path,
                              consistency_interval=0)
    c.start()
    return c


def _settled(c, predicate, what):
    """The first snapshot for which ``predicate`` holds."""
    def look():
        snap = c.snapshot()
        return snap if predicate(snap) else None

    return daemons.wait_until(look, 20, what)


def test_a_reconnection_costs_a_re_list_not_a_read_per_host(zookeeper, root_path, agents,
                                                           proxy):
    ctl = _view(zookeeper, root_path, url=f"zookeeper://{proxy.address}")
    try:
        _settled(ctl, lambda s: len(s.members) == N, f"{N} members")
        first, rearmed = ctl.stats()["reads"], ctl.stats()["rearm_reads"]
        assert first >= 2 * N  # the first look verifies every entry (its owner, its slot)
        dead = agents.pop("h007")
        proxy.reset()  # the controller's connection dropped (the session survives)
        daemons.wait_until(lambda: ctl.state is not ConnectionState.CONNECTED, 10,
                           "the controller to notice the cut")
        dead.stop()  # meanwhile a host's session ends
        proxy.restore()
        snap = _settled(ctl, lambda s: s.state is ConnectionState.CONNECTED and
                        "h007" not in s.members and s.watching_since is not None,
                        "the view current again")
        assert set(snap.members) == set(agents)
        assert snap.heartbeats["h007"] != ALIVE_NOW
        after = ctl.stats()
        # four re-lists, the lost host's slot and member check, the control nodes:
        # nothing per live host on the way to a current view ...
        assert after["reads"] - first <= 12, after
        assert after["resyncs"] == 2
        assert after["rearm_reads"] == rearmed  # the lists first, published at once
        # ... the capabilities' watches are re-armed behind it, once per live member
        daemons.wait_until(lambda: ctl.snapshot() and ctl.stats()["pending"] == 0, 10,
                           "the capabilities' watches re-armed")
        assert ctl.stats()["rearm_reads"] == N - 1
    finally:
        ctl.stop()


class _NoNova:
    """A Nova with no compute service: the actuator has nothing to decide
    (dry-run); the test watches the view only."""

    def services(self, host=None):
        return []


def test_the_loop_re_lists_on_the_reconnection_not_a_tick_later(zookeeper, root_path,
                                                                 agents, proxy):
    """The real run loop, its tick 60 s: after a cut of the controller's
    link, the loop wakes on the reconnection and its next look (the
    re-list) already misses the host whose session ended meanwhile. Before
    ``95f29bd`` it waited out the tick."""
    coord = zookeeper.coordinator("controller", url=f"zookeeper://{proxy.address}",
                                  root_path=root_path, consistency_interval=0)
    looks: list[tuple[float, frozenset[str]]] = []
    snapshot = coord.snapshot

    def look():  # the loop's one way in to the view: recorded, not changed
        snap = snapshot()
        looks.append((time.monotonic(), frozenset(snap.members)))
        return snap

    coord.snapshot = look
    actuator = RecoveryActuator(ActuatorSettings(name="ctl", dry_run=True), fencer=None,
                                nova=_NoNova(), evacuator_factory=None)
    service = ControllerService(
        coord, ControllerSettings(name="ctl", policy=DetectionPolicy(), tick_interval=60.0),
        actuator, nova_states=actuator.nova_up)
    loop = threading.Thread(target=service.run, daemon=True, name="controller-loop")
    loop.start()
    try:
        daemons.wait_until(lambda: any(len(m) == N for _, m in looks), 20,
                           f"a first look at {N} members")
        before = len(looks)
        dead = agents.pop("h007")
        proxy.reset()  # the controller's connection dropped (the session survives)
        daemons.wait_until(lambda: coord.state is not ConnectionState.CONNECTED, 10,
                           "the controller to notice the cut")
        dead.stop()  # meanwhile a host's session ends
        restored = time.monotonic()
        proxy.restore()
        # 20 s is a third of the tick: only the wake can bring a look this soon
        current = daemons.wait_until(
            lambda: next((m for t, m in looks[before:] if t > restored and "h007" not in m),
                         None), 20, "a look without h007 after the restore")
        assert current == frozenset(agents)
        assert coord.state is ConnectionState.CONNECTED
    finally:
        service.shutdown()  # sets stopping (wakes the loop), stops the coordinator
        loop.join(10)
        actuator.close()
    assert not loop.is_alive(), "the loop did not stop"


def test_forged_entries_are_ignored_and_reported(zookeeper, root_path, agents):
    ctl = _view(zookeeper, root_path)
    try:
        _settled(ctl, lambda s: len(s.members) == N, f"{N} members")
        liar = agents["h001"]  # a compromised host's own agent session
        liar.client.create(f"{root_path}/live/h002@", b"", ephemeral=True, sequence=True)
        liar.client.create(f"{root_path}/stalls/h002@", dumps({"stalled_for": 50.0}),
                           ephemeral=True, sequence=True)
        snap = _settled(ctl, lambda s: {a.kind for a in s.alerts} >=
                        {"forged-membership", "forged-stall"}, "two alerts")
        assert {a.host for a in snap.alerts} == {"h002"}
        assert snap.heartbeats["h002"] == ALIVE_NOW  # the forged stall is not believed
        assert snap.members["h002"].incarnation == agents["h002"].session_id
        agents["h002"].stop()  # h002 really dies: the forged entry cannot keep it alive
        snap = _settled(ctl, lambda s: "h002" not in s.members, "h002 lost")
        assert snap.heartbeats["h002"] != ALIVE_NOW
    finally:
        ctl.stop()


def test_a_session_ending_while_its_entry_is_verified_is_no_forgery(zookeeper, root_path,
                                                                     agents, monkeypatch):
    """The view reads a new entry's owner, then the host's member node. A
    session that ends in between (its member node and entry go in one
    transaction) is a departure: its entry is gone when read again."""
    ctl = _view(zookeeper, root_path)
    try:
        _settled(ctl, lambda s: len(s.members) == N, f"{N} members")
        zookeeper.provision(root_path, ["late"])
        member = f"{root_path}/hosts/late/member"
        late = zookeeper.coordinator("agent", "late", root_path=root_path)
        get_async, ended = ctl.client.get_async, []

        def session_ends_in_between(path, *args, **kwargs):
            if path == member and not ended:
                # answered after the entry's owner was (one connection, in order)
                ctl.client.exists(path)
                late.stop()  # the session ends: member node and entry go
                ended.append(path)
            return get_async(path, *args, **kwargs)

        monkeypatch.setattr(ctl.client, "get_async", session_ends_in_between)
        late.start()
        late.join("late", {"services": {"nova-compute": True}})
        snap = _settled(ctl, lambda s: bool(ended) and "late" not in s.members,
                        "late's entry verified while its session ended")
        assert not [a for a in snap.alerts if a.host == "late"], snap.alerts
        assert ctl.stats().get("forged-membership", 0) == 0
    finally:
        ctl.stop()


def test_a_deleted_index_entry_of_a_live_session_is_tampering(zookeeper, root_path, agents):
    ctl = _view(zookeeper, root_path)
    try:
        _settled(ctl, lambda s: len(s.members) == N, f"{N} members")
        (entry,) = [n for n in ctl.client.get_children(f"{root_path}/live")
                    if n.startswith("h003@")]
        ctl.client.delete(f"{root_path}/live/{entry}")
        snap = _settled(ctl, lambda s: any(a.kind == "tampered-membership" for a in s.alerts),
                        "the tampering alert")
        assert "h003" in snap.members and snap.heartbeats["h003"] == ALIVE_NOW
        # the agent created its entry again (asynchronously, from its watch)
        daemons.wait_until(lambda: [n for n in ctl.client.get_children(f"{root_path}/live")
                                    if n.startswith("h003@")], 10, "a new entry")
        assert agents["h003"].stats()["tampered"] == 1
    finally:
        ctl.stop()


def test_a_re_join_seen_with_its_old_sessions_end_is_no_tampering(zookeeper, root_path,
                                                                     agents):
    """A host's session ends and it joins again before the view's next
    refresh: that refresh verifies the new entry and sees the old member node
    deleted. The node was the old session's; nothing was tampered with."""
    ctl = _view(zookeeper, root_path)
    try:
        _settled(ctl, lambda s: len(s.members) == N, f"{N} members")
        events = ctl.stats().get("watch_events", 0)
        agents.pop("h005").stop()  # its session ends: member node and entry go
        daemons.wait_until(lambda: ctl.stats().get("watch_events", 0) > events, 10,
                           "the member node's deletion seen")
        again = agents["h005"] = zookeeper.coordinator("agent", "h005", root_path=root_path)
        again.start()
        again.join("h005", {"services": {"nova-compute": True}})
        daemons.wait_until(lambda: [n for n in ctl.client.get_children(f"{root_path}/live")
                                    if n.startswith("h005@")], 10, "h005's new entry")
        snap = ctl.snapshot()  # one refresh: the new entry and the old node's deletion
        assert snap.members["h005"].incarnation == again.session_id
        assert not [a for a in snap.alerts if a.host == "h005"], snap.alerts
        # while the new session lives, its own member node deleted is tampering
        ctl.client.delete(f"{root_path}/hosts/h005/member")
        snap = _settled(ctl, lambda s: any(a.kind == "tampered-membership" for a in s.alerts),
                        "the tampering alert")
        assert {a.host for a in snap.alerts} == {"h005"}
    finally:
        ctl.stop()


def test_a_tree_of_the_open_layout_is_refused_with_what_to_do(zookeeper, root_path,
                                                               daemon_factory):
    """An instanceha tree from before layouts had a version (every node open to
    anyone) is not taken over: the controller refuses, naming the root."""
    from kazoo.client import KazooClient

    from instanceha import exceptions

    old = KazooClient(hosts=f"127.0.0.1:{zookeeper.port}")
    old.start(timeout=20)
    try:
        old.ensure_path(f"{root_path}/members")
        old.ensure_path(f"{root_path}/hosts/compute1")
        ctl = zookeeper.coordinator("controller", root_path=root_path)
        with pytest.raises(exceptions.LayoutMismatch) as e:
            ctl.start()
        text = str(e.value)
        assert root_path in text and "layout 1" in text and "root_path" in text
        assert ctl.state is not ConnectionState.CONNECTED
        daemon = daemon_factory("controller", "ctl")
        assert daemon.proc.wait(60) == 2
        assert "refusing to start" in daemon.output() and root_path in daemon.output()
    finally:
        old.stop()
        old.close()


AGENT_PROCESS = """
import json, sys, time
sys.path.insert(0, "tools")
from harness.zookeeper import ZooKeeperServer
zk = ZooKeeperServer(sys.argv[1])  # the running server's dir: its port and credentials
zk.port, zk.secure_port = int(sys.argv[2]), int(sys.argv[3])
a = zk.coordinator("agent", "h1", root_path=sys.argv[4])
a.start()
incarnation = a.join("h1", {"services": {}})
c = a.session_credentials()
print(json.dumps([incarnation, c.session_id, c.password.hex()]), flush=True)
time.sleep(600)
"""


def test_a_resumed_session_keeps_its_one_membership(zookeeper, root_path):
    """A restarted agent presenting its session's credentials (its session file)
    finds its member node and its index entry: same incarnation, one entry."""
    import json
    import subprocess
    import sys

    from instanceha.coordination.base import SessionCredentials

    zookeeper.provision(root_path, ["h1"])
    proc = subprocess.Popen([sys.executable, "-c", AGENT_PROCESS, zookeeper.base_dir,
                             str(zookeeper.port), str(zookeeper.secure_port), root_path],
                            stdout=subprocess.PIPE, text=True)
    try:
        incarnation, sid, password = json.loads(proc.stdout.readline())
    finally:
        proc.kill()  # the process dies: no closeSession, the session lives on
        proc.wait()
    again = zookeeper.coordinator("agent", "h1", root_path=root_path)
    again.resume_session(SessionCredentials(sid, bytes.fromhex(password)))
    again.start()
    ctl = _view(zookeeper, root_path)
    try:
        assert again.session_id == incarnation
        assert again.join("h1", {"services": {}}) == incarnation
        entries = [n for n in ctl.client.get_children(f"{root_path}/live")
                   if n.startswith("h1@")]
        assert len(entries) == 1, entries
        snap = _settled(ctl, lambda s: "h1" in s.members, "h1 a member")
        assert snap.members["h1"].incarnation == incarnation and not snap.alerts
    finally:
        ctl.stop()
        again.stop()
