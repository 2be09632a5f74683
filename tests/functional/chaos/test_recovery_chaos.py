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

import collections
import dataclasses
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
from instanceha.notify import events
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

    def __init__(self, minicloud, nova, servers, daemon_factory, tmp_path, broker, cli):
        self.cloud, self.nova, self.servers = minicloud, nova, servers
        self.daemon_factory, self.tmp = daemon_factory, tmp_path
        self.broker, self.cli = broker, cli
        self.hosts = minicloud.hosts
        self.victim = self.hosts[0]
        self.exchange = f"ih-chaos-{next(_N)}-{os.getpid()}"
        nova_url = urllib.parse.urlsplit(minicloud.endpoints["nova"])
        self.nova_path = nova_url.path
        self.proxy = FaultProxy(f"http://{nova_url.hostname}:{nova_url.port}").start()
        self.bmc = None
        self.bmcs = {}  # host -> its ipmi_sim BMC
        self.agents = {}
        self.controllers = []
        self.listener = None
        self.events_path = tmp_path / "events.jsonl"

    # -- set-up ----------------------------------------------------------------
    def victim_bmc(self, entry=None, also=(), **bmc_args):
        """compute1's BMC (ipmi_sim), unless ``entry`` is given (a BMC that is not
        there); the hosts in ``also`` get an ipmi_sim BMC too (``self.bmcs``),
        the others in-memory BMCs (never fenced here)."""
        if entry is None:
            self.bmc = self.bmcs[self.victim] = IpmiSimBMC(
                str(self.tmp), name=f"bmc-{self.victim}", **bmc_args).start()
            entry = self.bmc.entry(timeout=2)
        for h in also:
            self.bmcs[h] = IpmiSimBMC(str(self.tmp), name=f"bmc-{h}").start()
        self.write_inventory(dict({h: b.entry(timeout=2) for h, b in self.bmcs.items()},
                                  **{self.victim: entry}))
        return self.bmc

    def write_inventory(self, entries):
        """The fencing inventory: ``entries`` (host -> entry), the rest fake.
        Replaced in one rename (a running controller reads it whole)."""
        inventory = {"hosts": {h: {"driver": "fake", "address": f"fake-{h}"}
                               for h in self.hosts}}
        inventory["hosts"].update(entries)
        self.inventory = self.tmp / "fencing-inventory.yaml"
        fresh = self.tmp / "fencing-inventory.yaml.new"
        fresh.write_text(yaml.safe_dump(inventory))
        os.chmod(fresh, 0o600)
        os.replace(fresh, self.inventory)

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
        """The events of the recoveries the consumer received. A change of the
        cloud's failover coverage (``instanceha.capacity.changed``, which a
        host's failure may cause) is not a step of one; its own tests are in
        ``tests/functional/compute/test_capacity.py``."""
        if not self.events_path.exists():
            return []
        lines = [json.loads(x) for x in self.events_path.read_text().splitlines() if x.strip()]
        return [e for e in lines if e.get("event_type") != events.CAPACITY_CHANGED
                and (suffix is None or e.get("event_type", "").endswith(suffix))]

    def unique_events(self):
        """Delivery is at least once: one per message_id, in the order received."""
        seen, out = set(), []
        for e in self.events():
            if e.get("message_id") not in seen:
                seen.add(e.get("message_id"))
                out.append(e)
        return out

    def incident(self, host=None):
        """The summary of the host's newest incident (``instanceha incidents``)."""
        listed = self.cli("incidents", "--host", host or self.victim, "--format", "json")
        found = json.loads(listed.stdout or "[]")
        return found[0] if found else {}

    def wait_steps_recorded(self, last):
        """Until the consumer received ``last`` (an event type, without
        ``instanceha.``; the outbox sends in order, so every step before it
        too) and the incident journal records each key it received as sent:
        the steps done so far are complete. Returns those keys."""
        def done():
            got = {e["payload"]["idempotency_key"] for e in self.events()}
            if not any(e["event_type"] == f"instanceha.{last}" for e in self.events()):
                return None
            sent = set(self.incident().get("notifications_sent", ()))
            return got if got <= sent else None
        return wait_for(done, 60, f"{last} received and every step sent recorded")

    def wait_steps_received(self, expected):
        """Until the consumer received every step of ``expected`` ((event type,
        instance id) pairs), then: each idempotency key exactly once, and no
        step beyond ``expected``. Returns what it received."""
        def steps():
            return sorted(((e["event_type"][len("instanceha."):],
                            e["payload"].get("instance_id")) for e in self.events()), key=str)
        wait_for(lambda: not (collections.Counter(expected) - collections.Counter(steps())),
                 120, f"every step on the bus: {expected}")
        got = self.events()
        keys = collections.Counter(e["payload"]["idempotency_key"] for e in got)
        assert [k for k, n in keys.items() if n > 1] == [], keys
        assert steps() == expected, steps()
        return got

    def start_agents(self):
        for h in self.hosts:
            n = h[len("compute"):]
            self.agents[h] = self.daemon_factory("agent", h, extra={"agent": {
                "watched_processes": f"nova-compute:nova-compute{n}.conf",
                "health_check_interval": 0.5}})

    def controller(self, name, nova=None, fencing=None, nova_events=False, controller=None,
                   capacity=None):
        """Every controller listens to Nova's notifications on the cloud's
        RabbitMQ (Nova declares its exchange non-durable, the rig's own bus is
        durable: [nova_notifications] amqp_durable_queues keeps them apart);
        ``nova_events``: the test relies on them."""
        sections = self.bus_sections()
        sections.update({
            "nova_notifications": {"transport_url": self.cloud.endpoints["transport_url"]},
            "fencing": dict({"inventory_file": str(self.inventory), "deadline": 20,
                             "poll_interval": 0.2, "test_only_allow_fake_driver": True},
                            **(fencing or {})),
            "nova": dict(self.cloud.nova_options(), timeout=30, evacuation_timeout=120,
                         poll_interval=0.5, endpoint_override=self.proxy.url + self.nova_path),
            "controller": dict({"max_failed_percent": 100}, **(controller or {})),
        })
        sections["nova"].update(nova or {})
        if capacity:
            sections["capacity"] = capacity
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

    def one_controller(self, nova=None, fencing=None, nova_events=False, controller=None,
                       capacity=None):
        ctl = self.controller("ctl-a", nova=nova, fencing=fencing, nova_events=nova_events,
                              controller=controller, capacity=capacity)
        ctl.wait_log(r"leadership gained by ctl-a", timeout=60)
        for h in self.hosts:
            ctl.wait_log(rf"host={h} phase=\w+->HEALTHY", timeout=90)
        return ctl

    # -- the failure -------------------------------------------------------------
    def fail_victim(self):
        """compute1 dies: agent and nova-compute gone, its BMC still says ON."""
        self.fail(self.victim)
        self.t_fail = time.monotonic()
        self.t_fail_wall = time.time()

    def fail(self, host):
        """The whole host dies: its agent, its nova-compute and its address."""
        self.agents[host].kill()
        self.cloud.kill_host(host)

    def marker(self, host=None):
        return self.nova.service(host or self.victim).marker

    def wait_marker(self, state, timeout=300, host=None):
        host = host or self.victim
        return wait_for(lambda: (m := self.marker(host)) is not None and m.state is state and m,
                        timeout, f"{host} marked {state.value}")

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

    def journal(self, host=None):
        """The entries of the host's newest incident, from ``instanceha incidents``."""
        listed = self.cli("incidents", "--host", host or self.victim, "--format", "json")
        found = json.loads(listed.stdout or "[]")
        if not found:
            return []
        shown = self.cli("incidents", "show", found[0]["id"], "--format", "json")
        return json.loads(shown.stdout or "{}").get("entries", [])

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
        for bmc in self.bmcs.values():
            bmc.stop()
        if not self.broker.running:
            self.broker.start()
        ensure_healthy(self.cloud, self.nova, timeout=240)


@pytest.fixture
def rig(minicloud, nova, servers, daemon_factory, tmp_path, broker, cli):
    ensure_healthy(minicloud, nova)
    r = Rig(minicloud, nova, servers, daemon_factory, tmp_path, broker, cli)
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
#
# One scenario, run at each step of a recovery: the leader (ctl-a) is SIGKILLed while
# the fault proxy holds its next write to Nova, after the notifications of the steps
# it completed were delivered (``instanceha listen`` on the real RabbitMQ received
# them) and recorded in the incident journal; the hot standby (ctl-b) takes over.
# Each case adds what it checks of its step.


@dataclasses.dataclass(frozen=True)
class KillAt:
    gate: tuple  # (method, path, body, skip) of the write held at the kill
    servers: int
    last_sent: str  # the last step (event type) sent before that write
    forward: bool = False  # the held write reaches Nova after the kill
    nova: dict = dataclasses.field(default_factory=dict)


def _after_fence_held(rig, a):
    """The leader fenced and now asks Nova to force the host down."""
    assert not rig.bmc.powered_on() and rig.bmc.power_off_requests() == 1
    assert rig.marker() is None  # nothing durable yet: the kill falls right here


def _after_fence_checked(rig, b, ids, fault, t_kill):
    bmc = rig.bmc
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


def _mid_evacuations_held(rig, a):
    (rig.first_evacuate,) = rig.evacuate_posts()
    assert rig.marker().state is mk.MarkerState.RECOVERING


def _mid_evacuations_checked(sent):
    def check(rig, b, ids, fault, t_kill):
        m = rig.wait_marker(mk.MarkerState.RECOVERED)
        t_done = time.monotonic()
        per = rig.assert_evacuated_once(ids)
        order = [re.search(r"/servers/([^/]+)/action", r.path).group(1)
                 for r in rig.evacuate_posts()]
        found = ("in progress and awaited it" if "already in progress" in b.read_log()
                 else "already moved")
        fault.observed(f"evacuate POSTs reaching Nova per server, in order: "
                       f"{[order.count(s) for s in order]}; migration records per server: "
                       f"{[per[s][1] for s in order]}"
                       + (f"; the standby found the 2nd {found}" if sent else ""))
        fault.observed(f"standby finished {t_done - t_kill:.1f} s after the kill; its marker: "
                       f"{m.note}")
        assert sorted(order) == sorted(ids)
        assert order[0] == rig.first_evacuate.path.split("/")[-2]
    return check


def _repair_victim(rig, ids):
    """Recovered; then the host is repaired (power on, nova-compute and the agent
    back): the leader asks Nova to enable it."""
    rig.wait_marker(mk.MarkerState.RECOVERED)
    rig.assert_evacuated_once(ids)
    rig.bmc.set_power(True)
    rig.cloud.start_compute(rig.victim)
    n = rig.victim[len("compute"):]
    rig.agents[f"{rig.victim}-back"] = rig.daemon_factory("agent", f"{rig.victim}-back", extra={
        "DEFAULT": {"host": rig.victim},
        "agent": {"watched_processes": f"nova-compute:nova-compute{n}.conf",
                  "health_check_interval": 0.5}})


def _before_reenable_checked(rig, b, ids, fault, t_kill):
    b.wait_log(rf"host={rig.victim} back in service", timeout=180)
    t_done = time.monotonic()
    svc = rig.nova.service(rig.victim)
    enables = rig.proxy.requests("PUT", SERVICES, body=ENABLE, forwarded=True)
    per = rig.evacuations_per_server(ids)
    fault.observed(f"enable PUTs reaching Nova: {len(enables)}; re-enabled by the standby "
                   f"{t_done - t_kill:.1f} s after the kill; power-off requests: "
                   f"{rig.bmc.power_off_requests()}; evacuate POSTs / migrations: "
                   f"{list(per.values())}")
    assert not svc.forced_down and not svc.disabled
    assert len(enables) == 1 and rig.bmc.power_off_requests() == 1
    assert all(v == (1, 1) for v in per.values())
    assert "fencing (token" not in b.read_log()


# case: (the kill, what happens before the write is held, what is checked when it is
# held, what is checked once the standby is done)
KILLS = {
    "after-fence": (KillAt(("PUT", SERVICES, FORCE_DOWN, 0), 2, "host.fence.end"),
                    None, _after_fence_held, _after_fence_checked),
    "mid-evacuations-2nd-sent": (
        KillAt(("POST", ACTION, EVACUATE, 1), 3, "instance.evacuate.end", forward=True,
               nova={"evacuation_concurrency": 1}),
        None, _mid_evacuations_held, _mid_evacuations_checked(True)),
    "mid-evacuations-2nd-not-sent": (
        KillAt(("POST", ACTION, EVACUATE, 1), 3, "instance.evacuate.end",
               nova={"evacuation_concurrency": 1}),
        None, _mid_evacuations_held, _mid_evacuations_checked(False)),
    "before-reenable": (KillAt(("PUT", SERVICES, ENABLE, 0), 1, "host.recovery.end"),
                        _repair_victim, None, _before_reenable_checked),
}


@pytest.mark.parametrize("kill", [
    pytest.param("after-fence", id="after-fence", marks=pytest.mark.fault(
        "leader SIGKILLed after the fence, before the force-down", component="controller",
        expect="the standby takes over, fences again only by reading the BMC (already off: "
               "no second power-off request), forces down once, evacuates each server once; "
               "the consumer receives each step once")),
    pytest.param("mid-evacuations-2nd-sent", id="2nd-sent", marks=pytest.mark.fault(
        "leader SIGKILLed in the middle of evacuations: 1st of 3 done, 2nd already sent",
        component="controller",
        expect="the 2nd evacuate reaches Nova after the leader died; the standby does not "
               "repeat it (awaits it if still running, or finds the server moved) and "
               "evacuates the 3rd: every server evacuated exactly once; the consumer "
               "receives each step once")),
    pytest.param("mid-evacuations-2nd-not-sent", id="2nd-not-sent", marks=pytest.mark.fault(
        "leader SIGKILLed in the middle of evacuations: 1st of 3 done, 2nd not yet sent",
        component="controller",
        expect="the standby evacuates the 2nd and the 3rd, not the 1st again: every server "
               "evacuated exactly once; the consumer receives each step once")),
    pytest.param("before-reenable", id="before-reenable", marks=pytest.mark.fault(
        "leader SIGKILLed after RECOVERED, before the re-enable", component="controller",
        expect="the standby re-enables the repaired host once; nothing is fenced or "
               "evacuated again; the consumer receives each step once")),
])
def test_leader_killed_at_a_step(rig, fault, kill):
    case, prepare, held, checked = KILLS[kill]
    rig.victim_bmc()
    ids = rig.boot(case.servers)
    rig.start_agents()
    rig.listen()
    method, path, body, skip = case.gate
    gate = rig.proxy.gate(method, path, body=body, skip=skip)
    a, b = rig.leader_and_standby(nova=case.nova)

    rig.fail_victim()
    if prepare is not None:
        prepare(rig, ids)
    gate.wait_held(240)
    if held is not None:
        held(rig, a)
    sent = rig.wait_steps_recorded(case.last_sent)
    a.kill()
    t_kill = time.monotonic()
    gate.release(forward=case.forward)  # not forwarded: the write dies with the leader

    b.wait_log(r"leadership gained by ctl-b", timeout=60)
    checked(rig, b, ids, fault, t_kill)
    got = rig.wait_steps_received(_steps_of_a_recovery(kill, ids))
    fault.observed(f"the consumer received {len(got)} notifications, each idempotency key "
                   f"once ({len(sent)} sent before the kill, recorded in the journal)")


def _steps_of_a_recovery(kill, ids):
    """Each step's event type and instance, as the consumer must receive them once."""
    steps = [("host.failed", None), ("host.fence.start", None), ("host.fence.end", None),
             ("host.recovery.start", None), ("host.recovery.end", None)]
    steps += [(f"instance.evacuate.{e}", sid) for sid in ids for e in ("start", "end")]
    if kill == "after-fence":
        steps.append(("host.fence.start", None))  # the standby's own attempt (#2)
    if kill == "before-reenable":
        steps.append(("host.restored", None))
    return sorted(steps, key=str)


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


# -- fences first ----------------------------------------------------------------------

@pytest.mark.fault(
    "Nova never answers a recovery's evacuate (every recovery worker waits on it) while "
    "another host fails", component="nova-api",
    expect="the second host is powered off (read back at its BMC), forced down and journaled "
           "fenced while the first recovery still waits on Nova: fences have workers of their "
           "own; its recovery follows once a recovery worker is free")
def test_a_fence_never_waits_for_recoveries_stuck_on_a_slow_nova(rig, fault):
    second = rig.hosts[1]
    rig.victim_bmc(also=[second])
    ids = rig.boot(1)
    rig.start_agents()
    # the victim's evacuate is held at the proxy: its recovery waits on Nova with the
    # only recovery worker
    gate = rig.proxy.gate("POST", ACTION, body=EVACUATE)
    # (and no client timeout cuts that wait short while the test looks). Nova's
    # scheduler picks the target when the held request goes on: a target planned
    # before could be the second host, which dies meanwhile, and the server would
    # then be sent again without it (unit: test_a_target_without_room_is_not_asked_again)
    rig.one_controller(controller={"recovery_workers": 1}, nova={"timeout": 600},
                       capacity={"plan_targets": False})

    rig.fail_victim()
    gate.wait_held(180)
    rig.wait_marker(mk.MarkerState.RECOVERING, 60)  # written beside the first evacuate
    rig.fail(second)
    t_second = time.monotonic()
    bmc2 = rig.bmcs[second]
    wait_for(lambda: not bmc2.powered_on(), 120, f"{second} powered off")
    journal = wait_for(lambda: (e := rig.journal(second)) and "forced_down" in
                       [x["kind"] for x in e] and e, 60, f"{second} journaled fenced")
    # all of this while the first recovery still waits on Nova
    assert gate.holding == 1 and rig.evacuate_posts(forwarded=True) == []
    assert rig.marker().state is mk.MarkerState.RECOVERING
    assert rig.marker(second).state is mk.MarkerState.FENCED
    kinds = [e["kind"] for e in journal]
    assert kinds.index("fence_start") < kinds.index("fence_ok") < kinds.index("forced_down")
    fault.observed(f"{second} read back off at its BMC {bmc2.first_off_at() - rig.t_fail_wall:.1f}"
                   f" s after {rig.victim} failed ({time.monotonic() - t_second:.1f} s after its "
                   f"own failure), while {rig.victim}'s evacuate was held; its journal: "
                   f"{', '.join(kinds)}")
    gate.release(forward=True)
    m = rig.wait_marker(mk.MarkerState.RECOVERED)
    rig.wait_marker(mk.MarkerState.RECOVERED, host=second)
    rig.assert_evacuated_once(ids)
    assert "1 evacuated, 0 failed" in m.note
    assert bmc2.power_off_requests() == 1 and rig.bmc.power_off_requests() == 1


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


@pytest.mark.fault(
    "BMC password wrong in the fencing inventory, then fixed in the file while the "
    "controller runs", component="bmc",
    expect="the fence fails and backs off (held, host.failed said once); the changed file is "
           "seen at the next tick and the fence is tried again at once, before its back-off "
           "step, with the fixed password: fenced and recovered, no restart")
def test_a_password_fixed_in_the_inventory_is_used_at_once(rig, fault):
    bmc = rig.victim_bmc()
    good = bmc.entry(timeout=2)
    rig.victim_bmc(entry=bmc.entry(timeout=2, password="not-the-password"))
    ids = rig.boot(1)
    rig.start_agents()
    rig.listen()
    ctl = rig.one_controller(fencing={"deadline": 3})
    rig.fail_victim()
    failed = rf"host={rig.victim} recovery=fence failed: .*next try in (\d+) s"
    # a failure whose back-off step is long enough to tell a retry at once from it
    wait_for(lambda: any(int(w) >= 8 for w in re.findall(failed, ctl.read_log())), 180,
             "a fence failure backed off for 8 s or more")
    rig.write_inventory({rig.victim: good})
    t_fixed = time.time()
    m = rig.wait_marker(mk.MarkerState.RECOVERED)
    rig.assert_evacuated_once(ids)
    entries = rig.journal()
    kinds = [e["kind"] for e in entries]
    changed = kinds.index("inventory_changed")
    retry = kinds.index("fence_start", changed)
    assert kinds[changed - 1] == "fence_error" and kinds[retry + 1] == "fence_ok", kinds
    due = entries[changed]["retry_was_due_at"]
    # the retry follows the reload, not the back-off schedule
    assert entries[changed]["at"] < entries[retry]["at"] < due
    assert bmc.power_off_requests() == 1 and "1 evacuated, 0 failed" in m.note
    starts = [e["payload"]["attempt"] for e in rig.events("host.fence.start")]
    got = wait_for(lambda: (x := rig.events("host.fence.end")) and x, 60, "host.fence.end")
    assert len(rig.events("host.failed")) == 1 and len(got) == 1
    assert starts == list(range(1, len(starts) + 1))
    fault.observed(f"{kinds.count('fence_error')} failed fence(s) before the fix; the file "
                   f"changed {due - t_fixed:.1f} s before the back-off's next try; retried "
                   f"{entries[retry]['at'] - entries[changed]['at']:.2f} s after the change was "
                   f"seen, fenced at attempt {starts[-1]}; host.failed on the bus: 1; marker: "
                   f"{m.note}")
