"""Chaos on the OpenStack side of a recovery (issue #6): the leader killed at
each step, Nova failing or timing out, the notification bus down, BMCs that
cannot fence.

Real parts, as in tests/functional/compute/test_end_to_end.py: the mini-cloud's
Nova (fake virt driver), ZooKeeper, ipmi_sim as the victim's BMC (it logs every
power request: the test counts power-offs behind the driver's back), two
instanceha-controller processes (leader and hot standby), real agents and a
private RabbitMQ for the notifications. The controllers reach Nova through
``tools/harness/faultproxy.py`` (``[nova] endpoint_override``): it injects the
Nova faults, holds a request at an exact step so the test can SIGKILL the
leader there, and logs every request, so "evacuated exactly once" is counted
where it happens: evacuate POSTs per server that reached Nova, and Nova's own
migration records per server.

Each test records what it measured with the ``fault`` fixture
(``pytest --fault-report PATH``; tools/fault_table.py renders doc/source/faults.rst).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml
from harness import procs
from harness.bmc import IpmiSimBMC
from harness.faultproxy import FaultProxy
from harness.rabbitmq import RabbitMQServer

from instanceha.compute.calls import template
from instanceha.engine import marker as mk
from tests.functional.cloud import ensure_healthy, wait_for

pytestmark = pytest.mark.functional

BIN = os.path.dirname(sys.executable)
_N = itertools.count(1)

# what the controllers send to Nova, as the proxy sees it
SERVICES = r"/os-services/[^/]+$"
FORCE_DOWN = r'"forced_down":\s*true'
ENABLE = r'"status":\s*"enabled"'
ACTION = r"/servers/[^/]+/action$"
EVACUATE = r'"evacuate"'

RABBIT_FAST = {  # reconnect quickly after the broker comes back (as tests/functional/notify)
    "amqp_durable_queues": "true", "rabbit_retry_interval": "1", "rabbit_retry_backoff": "1",
    "rabbit_interval_max": "1", "kombu_reconnect_delay": "0.1"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """The notification bus, private to this module: one test stops it."""
    b = RabbitMQServer(str(tmp_path_factory.mktemp("chaos-rabbitmq"))).start()
    yield b
    b.close()


class Rig:
    """One failure of compute1 with everything a chaos test needs around it."""

    def __init__(self, minicloud, nova, servers, daemon_factory, tmp_path, broker, zookeeper,
                 root_path):
        self.cloud, self.nova, self.servers = minicloud, nova, servers
        self.daemon_factory, self.tmp = daemon_factory, tmp_path
        self.broker, self.zookeeper, self.root_path = broker, zookeeper, root_path
        self.hosts = minicloud.hosts
        self.victim = self.hosts[0]
        self.exchange = f"ih-chaos-{next(_N)}-{os.getpid()}"
        nova_url = urllib.parse.urlsplit(minicloud.endpoints["nova"])
        self.nova_path = nova_url.path
        self.proxy = FaultProxy(f"http://{nova_url.hostname}:{nova_url.port}").start()
        self.bmc = None
        self.agents = {}
        self.controllers = []
        self.listener = None
        self.events_path = tmp_path / "events.jsonl"

    # -- set-up ----------------------------------------------------------------
    def victim_bmc(self, entry=None, **bmc_args):
        """compute1's BMC (ipmi_sim), unless ``entry`` is given (a BMC that is not
        there); the other hosts get in-memory BMCs (never fenced here)."""
        if entry is None:
            self.bmc = IpmiSimBMC(str(self.tmp), name=f"bmc-{self.victim}", **bmc_args).start()
            entry = self.bmc.entry(timeout=2)
        inventory = {"hosts": {h: {"driver": "fake", "address": f"fake-{h}"}
                               for h in self.hosts}}
        inventory["hosts"][self.victim] = entry
        self.inventory = self.tmp / "fencing-inventory.yaml"
        self.inventory.write_text(yaml.safe_dump(inventory))
        os.chmod(self.inventory, 0o600)
        return self.bmc

    def boot(self, count, prefix="chaos"):
        """``count`` opted-in servers on the victim, ACTIVE."""
        made = [self.servers.boot(f"{prefix}-{i}", self.victim,
                                  metadata={"instanceha:recovery": "evacuate"})
                for i in range(count)]
        for s in made:
            self.servers.wait_status(s.id, "ACTIVE")
        return [s.id for s in made]

    def bus_sections(self):
        return {"DEFAULT": {"transport_url": self.broker.url,
                            "control_exchange": self.exchange},
                "oslo_messaging_notifications": {"driver": "messagingv2"},
                "oslo_messaging_rabbit": dict(RABBIT_FAST),
                "notifications": {"retry_interval": "0.1", "retry_max_interval": "0.5"}}

    def listen(self):
        """``instanceha listen`` on a lasting pool of this test (declared now, so
        it collects the events even while the broker restarts)."""
        conf = self.tmp / "listen.conf"
        from harness import daemons
        daemons.write_conf(str(conf), self.bus_sections())
        out = open(self.events_path, "w")
        err_path = self.tmp / "listen.err"
        err = open(err_path, "w")
        self.listener = subprocess.Popen(
            [os.path.join(BIN, "instanceha"), "--config-file", str(conf), "listen",
             "--format", "json", "--pool", self.exchange, "--timeout", "900"],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        err.close()
        wait_for(lambda: "listening on" in err_path.read_text()
                 or self.listener.poll() is not None, 60, "instanceha listen to subscribe")
        assert self.listener.poll() is None, err_path.read_text()

    def events(self, suffix=None):
        if not self.events_path.exists():
            return []
        lines = [json.loads(x) for x in self.events_path.read_text().splitlines() if x.strip()]
        return [e for e in lines if suffix is None or e.get("event_type", "").endswith(suffix)]

    def unique_events(self):
        """Delivery is at least once: one per message_id, in the order received."""
        seen, out = set(), []
        for e in self.events():
            if e.get("message_id") not in seen:
                seen.add(e.get("message_id"))
                out.append(e)
        return out

    def start_agents(self):
        for h in self.hosts:
            n = h[len("compute"):]
            self.agents[h] = self.daemon_factory("agent", h, extra={"agent": {
                "watched_processes": f"nova-compute:nova-compute{n}.conf",
                "health_check_interval": 0.5}})

    def controller(self, name, nova=None, fencing=None, nova_events=False):
        """Every controller listens to Nova's notifications on the cloud's
        RabbitMQ (Nova declares its exchange non-durable, the rig's own bus is
        durable: [nova_notifications] amqp_durable_queues keeps them apart);
        ``nova_events``: the test relies on them."""
        sections = self.bus_sections()
        sections.update({
            "nova_notifications": {"transport_url": self.cloud.endpoints["transport_url"]},
            "fencing": dict({"inventory_file": str(self.inventory), "deadline": 20,
                             "poll_interval": 0.2}, **(fencing or {})),
            "nova": dict(self.cloud.nova_options(), timeout=30, evacuation_timeout=120,
                         poll_interval=0.5, endpoint_override=self.proxy.url + self.nova_path),
            "controller": {"max_failed_percent": 100},
        })
        sections["nova"].update(nova or {})
        ctl = self.daemon_factory("controller", name, extra=sections)
        self.controllers.append(ctl)
        return ctl

    def leader_and_standby(self, nova=None):
        """ctl-a leads (it started first), ctl-b observes every host as HEALTHY."""
        a = self.controller("ctl-a", nova=nova)
        a.wait_log(r"leadership gained by ctl-a", timeout=60)
        b = self.controller("ctl-b", nova=nova)
        for ctl in (a, b):
            for h in self.hosts:
                ctl.wait_log(rf"host={h} phase=\w+->HEALTHY", timeout=90)
        return a, b

    def one_controller(self, nova=None, fencing=None, nova_events=False):
        ctl = self.controller("ctl-a", nova=nova, fencing=fencing, nova_events=nova_events)
        ctl.wait_log(r"leadership gained by ctl-a", timeout=60)
        for h in self.hosts:
            ctl.wait_log(rf"host={h} phase=\w+->HEALTHY", timeout=90)
        return ctl

    # -- the failure -------------------------------------------------------------
    def fail_victim(self):
        """compute1 dies: agent and nova-compute gone, its BMC still says ON."""
        self.agents[self.victim].kill()
        self.cloud.kill_compute(self.victim)
        self.t_fail = time.monotonic()
        self.t_fail_wall = time.time()

    def marker(self):
        return self.nova.service(self.victim).marker

    def wait_marker(self, state, timeout=300):
        return wait_for(lambda: (m := self.marker()) is not None and m.state is state and m,
                        timeout, f"{self.victim} marked {state.value}")

    # -- what happened -----------------------------------------------------------
    def evacuate_posts(self, server_id=None, forwarded=True):
        path = rf"/servers/{server_id}/action$" if server_id else ACTION
        return self.proxy.requests("POST", path, body=EVACUATE, forwarded=forwarded)

    def evacuations_per_server(self, ids):
        """server -> (evacuate POSTs that reached Nova, Nova's migration records)"""
        return {sid: (len(self.evacuate_posts(sid)), len(self.nova.evacuations(sid)))
                for sid in ids}

    def force_downs(self, forwarded=True):
        return self.proxy.requests("PUT", SERVICES, body=FORCE_DOWN, forwarded=forwarded)

    def assert_evacuated_once(self, ids):
        per = self.evacuations_per_server(ids)
        for sid in ids:
            s = self.servers.wait_status(sid, "ACTIVE")
            assert s.compute_host != self.victim, f"{sid} still on {self.victim}"
        assert all(v == (1, 1) for v in per.values()), per
        return per

    def metrics(self, ctl):
        """The controller's /metrics as {'name{labels}': value}."""
        m = re.search(r"telemetry on (http://\S+/metrics)", ctl.read_log())
        if m is None:
            return {}
        text = urllib.request.urlopen(m.group(1), timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def cli(self, *args):
        from harness import daemons
        conf = daemons.write_conf(str(self.tmp / "cli.conf"), {"coordination": {
            "backend_url": self.zookeeper.url, "root_path": self.root_path}})
        return subprocess.run([os.path.join(BIN, "instanceha"), "--config-file", conf, *args],
                              capture_output=True, text=True, timeout=60)

    def since_fail(self, t):
        return t - self.t_fail

    def close(self):
        # controllers first: nothing may fence the host while the cloud is restored
        for d in self.controllers + list(self.agents.values()):
            d.kill()
        if self.listener is not None:
            self.listener.kill()
            self.listener.wait()
        self.proxy.stop()
        if self.bmc is not None:
            self.bmc.stop()
        if not self.broker.running:
            self.broker.start()
        ensure_healthy(self.cloud, self.nova, timeout=240)


@pytest.fixture
def rig(minicloud, nova, servers, daemon_factory, tmp_path, broker, zookeeper, root_path):
    ensure_healthy(minicloud, nova)
    r = Rig(minicloud, nova, servers, daemon_factory, tmp_path, broker, zookeeper, root_path)
    try:
        yield r
    finally:
        r.close()


def _fence_attempts(log, host):
    """Times (s, from the log's own stamps) of the fence attempts of ``host``."""
    from datetime import datetime
    stamps = re.findall(rf"^(\S+ \S+) .*host={host} fencing \(token", log, re.M)
    return [datetime.strptime(s, "%Y-%m-%d %H:%M:%S.%f").timestamp() for s in stamps]


# -- the leader killed at each step ----------------------------------------------------

@pytest.mark.fault(
    "leader SIGKILLed after the fence, before the force-down", component="controller",
    expect="the standby takes over, fences again only by reading the BMC (already off: no "
           "second power-off request), forces down once, evacuates each server once")
def test_leader_killed_after_fence_before_force_down(rig, fault):
    bmc = rig.victim_bmc()
    ids = rig.boot(2)
    rig.start_agents()
    gate = rig.proxy.gate("PUT", SERVICES, body=FORCE_DOWN)
    a, b = rig.leader_and_standby()

    rig.fail_victim()
    gate.wait_held(120)  # the leader fenced and now asks Nova to force the host down
    assert not bmc.powered_on() and bmc.power_off_requests() == 1
    assert rig.marker() is None  # nothing durable yet: the kill falls right here
    a.kill()
    t_kill = time.monotonic()
    gate.release(forward=False)  # the force-down dies with the leader: Nova never sees it

    b.wait_log(r"leadership gained by ctl-b", timeout=60)
    b.wait_log(rf"host={rig.victim} fenced: ipmi read back off after (\d+) request", 120)
    m = rig.wait_marker(mk.MarkerState.RECOVERED)
    t_done = time.monotonic()
    per = rig.assert_evacuated_once(ids)
    requests = re.search(rf"host={rig.victim} fenced: ipmi read back off after (\d+) request",
                         b.read_log()).group(1)
    force = rig.force_downs()
    fault.observed(f"power-off requests at the BMC: {bmc.power_off_requests()} (the standby's "
                   f"fence read the BMC: OFF after {requests} request(s))")
    fault.observed(f"force-down PUTs reaching Nova: {len(force)}; evacuate POSTs / migrations "
                   f"per server: {sorted(per.values())}")
    fault.observed(f"recovered {t_done - t_kill:.1f} s after the kill; marker: {m.note}")
    assert bmc.power_off_requests() == 1 and requests == "0"
    assert len(force) == 1 and bmc.first_off_at() < force[0].wall
    token_b = re.search(r"leadership gained by ctl-b \(token (\d+)\)", b.read_log()).group(1)
    assert m.token == int(token_b)  # the standby's fence, not the dead leader's
    assert f"{len(ids)} evacuated, 0 failed" in m.note


@pytest.mark.parametrize("sent", [
    pytest.param(True, id="2nd-sent", marks=pytest.mark.fault(
        "leader SIGKILLed in the middle of evacuations: 1st of 3 done, 2nd already sent",
        component="controller",
        expect="the 2nd evacuate reaches Nova after the leader died; the standby does not "
               "repeat it (awaits it if still running, or finds the server moved) and "
               "evacuates the 3rd: every server evacuated exactly once")),
    pytest.param(False, id="2nd-not-sent", marks=pytest.mark.fault(
        "leader SIGKILLed in the middle of evacuations: 1st of 3 done, 2nd not yet sent",
        component="controller",
        expect="the standby evacuates the 2nd and the 3rd, not the 1st again: every server "
               "evacuated exactly once")),
])
def test_leader_killed_mid_evacuations(rig, fault, sent):
    rig.victim_bmc()
    ids = rig.boot(3)
    rig.start_agents()
    gate = rig.proxy.gate("POST", ACTION, body=EVACUATE, skip=1)
    # one evacuation at a time: the kill falls between the 1st and the 2nd
    a, b = rig.leader_and_standby(nova={"evacuation_concurrency": 1})

    rig.fail_victim()
    gate.wait_held(180)
    (first,) = rig.evacuate_posts()
    assert rig.marker().state is mk.MarkerState.RECOVERING
    a.kill()
    t_kill = time.monotonic()
    # sent: Nova does it, nobody reads the answer; not sent: it dies with the leader
    gate.release(forward=sent)

    b.wait_log(r"leadership gained by ctl-b", timeout=60)
    m = rig.wait_marker(mk.MarkerState.RECOVERED)
    t_done = time.monotonic()
    per = rig.assert_evacuated_once(ids)
    order = [re.search(r"/servers/([^/]+)/action", r.path).group(1) for r in rig.evacuate_posts()]
    found = ("in progress and awaited it" if "already in progress" in b.read_log()
             else "already moved")
    fault.observed(f"evacuate POSTs reaching Nova per server, in order: "
                   f"{[order.count(s) for s in order]}; migration records per server: "
                   f"{[per[s][1] for s in order]}"
                   + (f"; the standby found the 2nd {found}" if sent else ""))
    fault.observed(f"standby finished {t_done - t_kill:.1f} s after the kill; its marker: "
                   f"{m.note}")
    assert sorted(order) == sorted(ids) and order[0] == first.path.split("/")[-2]


@pytest.mark.fault(
    "leader SIGKILLed after RECOVERED, before the re-enable", component="controller",
    expect="the standby re-enables the repaired host once; nothing is fenced or evacuated "
           "again")
def test_leader_killed_before_reenable(rig, fault):
    bmc = rig.victim_bmc()
    ids = rig.boot(1)
    rig.start_agents()
    gate = rig.proxy.gate("PUT", SERVICES, body=ENABLE)
    a, b = rig.leader_and_standby()

    rig.fail_victim()
    rig.wait_marker(mk.MarkerState.RECOVERED)
    rig.assert_evacuated_once(ids)
    # the host is repaired: power on, nova-compute and the agent come back
    bmc.set_power(True)
    rig.cloud.start_compute(rig.victim)
    n = rig.victim[len("compute"):]
    rig.agents[f"{rig.victim}-back"] = rig.daemon_factory("agent", f"{rig.victim}-back", extra={
        "DEFAULT": {"host": rig.victim},
        "agent": {"watched_processes": f"nova-compute:nova-compute{n}.conf",
                  "health_check_interval": 0.5}})
    gate.wait_held(240)
    a.kill()
    t_kill = time.monotonic()
    gate.release(forward=False)

    b.wait_log(r"leadership gained by ctl-b", timeout=60)
    b.wait_log(rf"host={rig.victim} back in service", timeout=180)
    t_done = time.monotonic()
    svc = rig.nova.service(rig.victim)
    enables = rig.proxy.requests("PUT", SERVICES, body=ENABLE, forwarded=True)
    per = rig.evacuations_per_server(ids)
    fault.observed(f"enable PUTs reaching Nova: {len(enables)}; re-enabled by the standby "
                   f"{t_done - t_kill:.1f} s after the kill; power-off requests: "
                   f"{bmc.power_off_requests()}; evacuate POSTs / migrations: "
                   f"{list(per.values())}")
    assert not svc.forced_down and not svc.disabled
    assert len(enables) == 1 and bmc.power_off_requests() == 1
    assert all(v == (1, 1) for v in per.values())
    assert "fencing (token" not in b.read_log()


# -- Nova failing -------------------------------------------------------------------

@pytest.mark.fault(
    "Nova API answers 500 to the force-down (3 times) and to the evacuate (3 times)",
    component="nova-api",
    expect="each retried with back-off; the host ends forced down and recovered, each "
           "server evacuated once, one power-off")
def test_nova_5xx_on_force_down_and_evacuate(rig, fault):
    bmc = rig.victim_bmc()
    ids = rig.boot(1)
    rig.start_agents()
    fd = rig.proxy.fail("PUT", SERVICES, body=FORCE_DOWN, status=500, times=3)
    ev = rig.proxy.fail("POST", ACTION, body=EVACUATE, status=500, times=3)
    ctl = rig.one_controller()

    rig.fail_victim()
    m = rig.wait_marker(mk.MarkerState.RECOVERED)
    t_done = time.monotonic()
    per = rig.evacuations_per_server(ids)
    log = ctl.read_log()
    fault.observed(f"500s served: force-down {fd.hits}, evacuate {ev.hits}; force-down PUTs "
                   f"reaching Nova {len(rig.force_downs())}; power-off requests "
                   f"{bmc.power_off_requests()}")
    fault.observed(f"evacuate POSTs / migrations per server: {list(per.values())}; marker: "
                   f"{m.note}; recovered {rig.since_fail(t_done):.1f} s after the failure")
    waits = re.findall(r"next try in (\d+) s", log)
    fault.observed(f"retry waits logged (s): {waits}")
    assert fd.hits == 3 and ev.hits == 3
    assert bmc.power_off_requests() == 1
    assert len(rig.force_downs()) == 1
    rig.assert_evacuated_once(ids)
    assert "1 evacuated, 0 failed" in m.note


@pytest.mark.fault(
    "Nova API times out (the answer to the force-down and to the evacuate comes after the "
    "client's timeout; Nova did the work)", component="nova-api",
    expect="the timed-out calls are retried; the repeated force-down is harmless, the "
           "repeated evacuate is recognised as already running: each server evacuated once")
def test_nova_timeouts_on_force_down_and_evacuate(rig, fault):
    bmc = rig.victim_bmc()
    ids = rig.boot(1)
    rig.start_agents()
    fd = rig.proxy.delay("PUT", SERVICES, body=FORCE_DOWN, seconds=8, when="after")
    ev = rig.proxy.delay("POST", ACTION, body=EVACUATE, seconds=8, when="after")
    ctl = rig.one_controller(nova={"timeout": 4})

    rig.fail_victim()
    m = rig.wait_marker(mk.MarkerState.RECOVERED)
    t_done = time.monotonic()
    per = rig.evacuations_per_server(ids)
    answers = [r.status for r in rig.evacuate_posts()]
    fault.observed(f"answers held past the 4 s timeout: force-down {fd.hits}, evacuate "
                   f"{ev.hits}; force-down PUTs reaching Nova {len(rig.force_downs())}; "
                   f"power-off requests {bmc.power_off_requests()}")
    accepted = "but Nova had accepted it: not sent again" in ctl.read_log()
    fault.observed(f"evacuate answers {answers} (None: timed out); no transport retry"
                   + ("; the controller saw Nova had accepted it" if accepted else ""))
    fault.observed(f"evacuate POSTs reaching Nova / migrations per server: "
                   f"{list(per.values())}; marker: {m.note}; recovered "
                   f"{rig.since_fail(t_done):.1f} s after the failure")
    assert fd.hits == 1 and ev.hits == 1
    assert bmc.power_off_requests() == 1
    # no transport retry: the one force-down and the one evacuate per server that
    # reached Nova are the only ones sent (our own retry read Nova first)
    assert len(rig.force_downs(forwarded=None)) == 1
    for sid in ids:
        s = rig.servers.wait_status(sid, "ACTIVE")
        assert s.compute_host != rig.victim
    assert all(v == (1, 1) for v in per.values()), per  # never sent or evacuated twice
    assert len(rig.evacuate_posts(forwarded=None)) == len(ids)
    assert "1 evacuated, 0 failed" in m.note, (m.note, ctl.read_log()[-3000:])


# -- the pipeline: reads during the fence, writes after it ---------------------------

def test_pipelined_recovery_reads_during_the_fence_writes_after(rig):
    """The host's servers are listed while the (slow) BMC powers off; nothing is
    written to Nova before the power is read back off; the force-down comes
    before every evacuate; each server is evacuated once; and the evacuations
    learn their end from Nova's own versioned notifications (the reads are 20 s
    apart here, so only a notification can wake them)."""
    bmc = rig.victim_bmc(power_delay=3)
    ids = rig.boot(3, prefix="pipe")
    rig.start_agents()
    ctl = rig.controller("ctl-a", nova={"poll_interval": 20, "poll_initial_interval": 20},
                         nova_events=True)
    ctl.wait_log(r"leadership gained by ctl-a", timeout=60)
    for h in rig.hosts:
        ctl.wait_log(rf"host={h} phase=\w+->HEALTHY", timeout=90)
    ctl.wait_log(r"listening to Nova's versioned notifications", timeout=60)

    rig.fail_victim()
    m = rig.wait_marker(mk.MarkerState.RECOVERED)
    rig.assert_evacuated_once(ids)
    assert "3 evacuated, 0 failed" in m.note, m.note
    off_at = bmc.first_off_at()
    lists = [r for r in rig.proxy.requests("GET", rf"/servers/detail\?.*host={rig.victim}")
             if r.wall > rig.t_fail_wall]
    writes = rig.proxy.requests("PUT") + rig.proxy.requests("POST", ACTION)
    force = rig.force_downs()
    posts = rig.evacuate_posts()
    assert lists and force and len(posts) == len(ids)
    assert lists[0].wall < off_at, "the servers were not listed during the fence"
    assert all(w.wall > off_at for w in writes), "a write reached Nova before the fence"
    assert force[0].wall < min(p.wall for p in posts)
    metrics = rig.metrics(ctl)
    assert metrics.get('instanceha_nova_notifications_total{state="woke"}', 0) >= 1, metrics


# -- the API call budget ----------------------------------------------------------------

BUDGET_PER_SERVER = 10  # API requests per evacuated server, verification included


def test_recovery_of_20_servers_stays_within_the_api_call_budget(rig):
    """Every request the controller sent to the real Nova (the proxy counts them)
    from the failure to the RECOVERED marker, and the count the incident journal
    records for the recovery (Nova, Glance, Keystone: every OpenStack call), are
    at most 10 per evacuated server."""
    rig.victim_bmc()
    ids = rig.boot(20, prefix="budget")
    rig.start_agents()
    # the defaults of the waits (the rig reads every 0.5 s to keep the other tests
    # short), with Nova's notifications
    ctl = rig.one_controller(nova={"poll_interval": 2.0, "poll_initial_interval": 0.25},
                             nova_events=True)
    ctl.wait_log(r"listening to Nova's versioned notifications", timeout=60)

    rig.fail_victim()
    rig.wait_marker(mk.MarkerState.RECOVERED)
    t_recovered = time.time()
    rig.assert_evacuated_once(ids)
    to_nova = [r for r in rig.proxy.requests() if rig.t_fail_wall <= r.wall <= t_recovered]

    def journal_count():
        listed = rig.cli("incidents", "--host", rig.victim, "--format", "json")
        for inc in json.loads(listed.stdout or "[]"):
            shown = rig.cli("incidents", "show", inc["id"], "--format", "json")
            for e in json.loads(shown.stdout or "{}").get("entries", []):
                if e.get("kind") == "recovery_end":
                    return e
        return None

    end = wait_for(journal_count, 60, "the recovery_end entry in the incident journal")
    by_path = {}
    for r in to_nova:
        key = f"{r.method} {template(r.path)}"
        by_path[key] = by_path.get(key, 0) + 1
    assert len(rig.evacuate_posts()) == len(ids)
    assert len(ids) <= end["api_calls"] <= BUDGET_PER_SERVER * len(ids), end
    assert len(to_nova) <= BUDGET_PER_SERVER * len(ids), (len(to_nova), by_path)
    assert f"{end['api_calls']} API requests since the fence" in ctl.read_log()


# -- the notification bus down --------------------------------------------------------

@pytest.mark.fault(
    "RabbitMQ (the notification bus) down during the whole recovery", component="rabbitmq",
    expect="recovery finishes without the bus (evacuation does not depend on it); the "
           "outbox keeps the notifications and delivers every one, in order, when the "
           "broker returns (within delivery_deadline)")
def test_rabbitmq_down_during_recovery(rig, fault):
    rig.victim_bmc()
    ids = rig.boot(1)
    rig.start_agents()
    rig.listen()
    ctl = rig.one_controller()

    rig.broker.stop()
    t_down = time.monotonic()
    rig.fail_victim()
    m = rig.wait_marker(mk.MarkerState.RECOVERED)
    t_recovered = time.monotonic()
    assert not rig.broker.running
    rig.assert_evacuated_once(ids)
    held = wait_for(lambda: (x := rig.metrics(ctl)).get(
        "instanceha_notification_delivery_failures_total", 0) > 0 and x, 30,
        "failed delivery attempts in the metrics")
    pending = held.get("instanceha_notifications_pending", 0)
    assert pending > 0 and rig.events() == []

    rig.broker.start()
    t_up = time.monotonic()
    expected = ["host.failed", "host.fence.start", "host.fence.end", "host.recovery.start",
                "instance.evacuate.start", "instance.evacuate.end", "host.recovery.end"]
    got = wait_for(lambda: len(x := rig.unique_events()) >= len(expected) and x, 120,
                   "the notifications after the broker returned")
    t_delivered = time.monotonic()
    after = rig.metrics(ctl)
    lost = after.get('instanceha_notifications_total{state="lost"}')
    types = [e["event_type"][len("instanceha."):] for e in got]
    fault.observed(f"recovered {t_recovered - t_down:.1f} s after the broker stopped, with it "
                   f"down; {pending:.0f} notifications pending, "
                   f"{held['instanceha_notification_delivery_failures_total']:.0f} failed "
                   f"attempts by then")
    fault.observed(f"all {len(got)} delivered {t_delivered - t_up:.1f} s after the broker "
                   f"started, in order: {', '.join(types)}; lost {lost:.0f}")
    assert types == expected
    assert lost == 0
    assert after.get("instanceha_notifications_pending") == 0
    assert "1 evacuated, 0 failed" in m.note


# -- BMCs that cannot fence -----------------------------------------------------------

def _hold_then_attest(rig, fault, ctl, ids, bmc_desc):
    errors = wait_for(lambda: len(x := rig.events("host.fence.error")) >= 3 and x, 180,
                      "three fence errors")
    attempts = _fence_attempts(ctl.read_log(), rig.victim)
    gaps = [round(b - a, 1) for a, b in zip(attempts, attempts[1:], strict=False)]
    # held: not forced down, not marked, nothing evacuated
    svc = rig.nova.service(rig.victim)
    assert not svc.forced_down and svc.marker is None
    assert rig.evacuate_posts() == [] and rig.force_downs() == []
    fails = rig.metrics(ctl).get('instanceha_fences_total{result="error"}', 0)
    fault.observed(f"{bmc_desc}: held, nothing forced down or evacuated; "
                   f"{len(errors)} fence_error notifications, fences_total{{error}}={fails:.0f}, "
                   f"gaps between fence attempts {gaps} s; first error: "
                   f"{errors[0]['payload']['error'][:120]}")
    assert all(e["payload"]["retrying"] for e in errors)

    r = rig.cli("host", "confirm-down", rig.victim, "--reason", "PDU outlet switched off")
    assert r.returncode == 0, r.stderr
    t_attest = time.monotonic()
    m = rig.wait_marker(mk.MarkerState.RECOVERED)
    per = rig.assert_evacuated_once(ids)
    fenced_note = re.search(r"marked fenced on attestation", ctl.read_log())
    attested = rig.metrics(ctl).get('instanceha_fences_total{result="attested"}', 0)
    fault.observed(f"after 'instanceha host confirm-down': recovered in "
                   f"{time.monotonic() - t_attest:.1f} s; fences_total{{attested}}="
                   f"{attested:.0f}; evacuate POSTs / migrations {list(per.values())}; "
                   f"marker: {m.note}")
    assert fenced_note and attested == 1
    return gaps


@pytest.mark.fault(
    "BMC unreachable (nothing listens on its address)", component="bmc",
    expect="the host is held (not forced down, nothing evacuated), fence_error notified and "
           "counted, the fence retried with growing back-off; an operator's confirm-down lets "
           "recovery proceed")
def test_bmc_unreachable_then_attested(rig, fault):
    import socket
    rig.victim_bmc(entry={"driver": "ipmi", "address": "127.0.0.1",
                          "port": procs.free_port(socket.SOCK_DGRAM), "username": "admin",
                          "password": "password", "timeout": 1})
    ids = rig.boot(1)
    rig.start_agents()
    rig.listen()
    ctl = rig.one_controller(fencing={"deadline": 3})
    rig.fail_victim()
    gaps = _hold_then_attest(rig, fault, ctl, ids, "unreachable BMC")
    assert gaps[-1] > gaps[0]


@pytest.mark.fault(
    "BMC refuses the password", component="bmc",
    expect="the host is held (not forced down, nothing evacuated), fence_error notified and "
           "counted, retried with back-off; an operator's confirm-down lets recovery proceed")
def test_bmc_wrong_password_then_attested(rig, fault):
    bmc = rig.victim_bmc()
    entry = bmc.entry(timeout=2, password="not-the-password")
    rig.victim_bmc(entry=entry)  # same BMC, wrong password in the inventory
    ids = rig.boot(1)
    rig.start_agents()
    rig.listen()
    ctl = rig.one_controller(fencing={"deadline": 3})
    rig.fail_victim()
    gaps = _hold_then_attest(rig, fault, ctl, ids, "wrong password")
    fault.observed(f"power requests the BMC executed: {bmc.power_off_requests()}")
    assert bmc.power_off_requests() == 0 and bmc.powered_on()
    assert gaps[-1] > gaps[0]


@pytest.mark.fault(
    "slow BMC (the power-off takes effect 6 s after the request; fence deadline 3 s)",
    component="bmc",
    expect="the first fence is not confirmed in time: fence_error, host held, nothing "
           "forced down or evacuated; a retry reads OFF and recovery proceeds; nothing is "
           "forced down before the BMC reads OFF")
def test_bmc_slow(rig, fault):
    bmc = rig.victim_bmc(power_delay=6)
    ids = rig.boot(1)
    rig.start_agents()
    rig.listen()
    ctl = rig.one_controller(fencing={"deadline": 3})
    rig.fail_victim()
    m = rig.wait_marker(mk.MarkerState.RECOVERED)
    per = rig.assert_evacuated_once(ids)
    errors = rig.events("host.fence.error")
    force = rig.force_downs()
    off_at = bmc.first_off_at()  # behind the driver's back: when the bit really changed
    off_after = off_at - rig.t_fail_wall
    fd_after = force[0].wall - rig.t_fail_wall
    first_evac = rig.evacuate_posts()[0].wall - rig.t_fail_wall
    fault.observed(f"{len(errors)} fence_error before the read-back said OFF; "
                   f"{bmc.power_off_requests()} power-off request(s) sent")
    fault.observed(f"after the failure: BMC off at {off_after:.1f} s, force-down at "
                   f"{fd_after:.1f} s, first evacuate at {first_evac:.1f} s; evacuate POSTs / "
                   f"migrations {list(per.values())}; marker: {m.note}")
    assert errors and len(force) == 1
    assert off_at < force[0].wall < rig.evacuate_posts()[0].wall
    assert "1 evacuated, 0 failed" in m.note, ctl.read_log()[-2000:]
