"""An agent's death is not the host's death, on real parts.

One stack for the whole module (the session's ZooKeeper and mini-cloud, an
ipmi_sim BMC for the victim, instanceha's agents and controller as
processes), two servers on the victim that opted in to evacuation, its
nova-compute alive. The victim's agent is:

* SIGKILLed and started again at once (what ``Restart=always`` does);
* sent SIGHUP (its configuration changed: debug on, a watched process more);
* ended by an exception in its main loop (status 70), then started again;
* kept down longer than the session timeout: the second source (a probe of
  the host's own loopback address, Nova's hypervisor ``host_ip``) holds it as
  "agent dead, host alive";

and in each case no power-off request reaches the BMC (its own record), no
evacuation happens (Nova's migration records), the agent is back and the log
(or, for the last, the incident journal and ``instanceha status``) says what
happened. Last, another whole host dies (agent and nova-compute SIGKILLed, its
address silent): it is fenced as before (its BMC reads off), recovered and put
back in service. (The evacuation of a dead host's servers through the second
source is test_controller_recovery's and test_end_to_end's: their hosts die
with kill_host too.)

The victim's agent runs with a 4 s session: the tests check the mechanisms
whatever the machine's load; how fast a restart resumes a 2 s session is
benchmarks/agent_restart_bench.py's figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sys
import time

import harness
import pytest
from harness.bmc import IpmiSimBMC

from tests.functional.cloud import Servers, ensure_healthy, wait_for

from .test_controller_recovery import KEEP, inventory, recovered

pytestmark = pytest.mark.functional
CRASH_AGENT = os.path.join(os.path.dirname(harness.__file__), "crash_agent.py")


@dataclasses.dataclass
class Rig:
    cloud: object
    nova: object
    factory: object
    victim: str
    bmc: IpmiSimBMC
    agent: object
    ctl: object
    server_ids: list
    crash_file: str
    other: str
    other_bmc: IpmiSimBMC
    agents: dict

    def untouched(self) -> None:
        """Nothing was done to the victim: power on and no power-off request at
        its BMC, its servers ACTIVE on it with no evacuation, no fence logged."""
        assert self.bmc.powered_on()
        assert self.bmc.power_off_requests() == 0
        for sid in self.server_ids:
            s = self.nova.server(sid)
            assert (s.host, s.status) == (self.victim, "ACTIVE"), (sid, s.host, s.status)
            assert self.nova.evacuations(sid) == []
        log = self.ctl.read_log()
        assert not re.search(rf"host={self.victim} (fencing|fenced|forced down)", log)
        assert not re.search(rf"host={self.victim} phase=\w+->FAILED", log)

    def restart_agent(self) -> None:
        """What systemd does after any end but a planned stop."""
        time.sleep(0.1)  # RestartSec
        self.agent.start()

    def phase_changes(self, after: int) -> list[str]:
        return re.findall(rf"host={self.victim} phase=(\w+->\w+)", self.ctl.read_log()[after:])


@pytest.fixture(scope="module")
def rig(minicloud, nova, admin, module_daemon_factory, tmp_path_factory):
    ensure_healthy(minicloud, nova)
    work = tmp_path_factory.mktemp("agent-death")
    hosts, victim, other = minicloud.hosts, minicloud.hosts[0], minicloud.hosts[1]
    bmc = IpmiSimBMC(str(work), name="bmc-victim", password="bmc-Secret-9").start()
    other_bmc = IpmiSimBMC(str(work), name="bmc-other", password="bmc-Secret-8").start()
    servers = Servers(admin, minicloud.endpoints)
    try:
        ids = [servers.boot(f"agent-death-{i}", victim, KEEP).id for i in range(2)]
        for sid in ids:
            servers.wait_status(sid, "ACTIVE")
        crash_file = str(work / "crash")
        agents = {}
        for h in hosts:
            n = h[len("compute"):]
            extra = {"DEFAULT": {"host": h},
                     "agent": {"watched_processes": f"nova-compute:nova-compute{n}.conf",
                               "health_check_interval": 0.5}}
            kwargs = {}
            if h == victim:
                extra["coordination"] = {"session_timeout": 4.0}
                extra["detection"] = {"hung_after": 4.0}
                kwargs = {"argv_prefix": [sys.executable, CRASH_AGENT],
                          "env": {"INSTANCEHA_TEST_CRASH_FILE": crash_file}}
            agents[h] = module_daemon_factory("agent", h, extra=extra, **kwargs)
        inv = inventory(work, hosts, {victim: bmc, other: other_bmc})
        ctl = module_daemon_factory("controller", "ctl", extra={
            "fencing": {"inventory_file": inv, "deadline": 20, "poll_interval": 0.2,
                        "test_only_allow_fake_driver": True},
            "nova": dict(minicloud.nova_options(), timeout=30, evacuation_timeout=120,
                         evacuation_attempts=2, poll_interval=0.5),
            "controller": {"max_failed_percent": 100}})
        ctl.wait_log(r"leadership gained", timeout=60)
        for h in hosts:
            ctl.wait_log(rf"host={h} phase=\w+->HEALTHY", timeout=60)
        yield Rig(minicloud, nova, module_daemon_factory, victim, bmc, agents[victim], ctl,
                  ids, crash_file, other, other_bmc, agents)
    finally:
        servers.delete_all()
        bmc.stop()
        other_bmc.stop()
        minicloud.restore(victim)
        minicloud.restore(other)


@pytest.fixture
def alive(rig):
    """Each test starts with the victim's agent running and joined."""
    if rig.agent.proc.poll() is not None:
        rig.restart_agent()
    rig.agent.wait_log(r"joined as compute1", timeout=30)
    return rig


@pytest.mark.fault("Agent killed (SIGKILL) beside a live nova-compute, restarted by systemd",
                   component="agent",
                   expect="the restarted agent resumes its ZooKeeper session: no phase change, "
                          "no power-off request at the BMC, no evacuation")
def test_sigkill_of_the_agent_fences_nothing(alive, fault):
    rig = alive
    mark_ctl, mark_agent, old_pid = rig.ctl.log_size(), rig.agent.log_size(), rig.agent.pid
    killed = time.monotonic()
    rig.agent.kill()
    rig.restart_agent()
    m = rig.agent.wait_log(rf"resumed session 0x[0-9a-f]+ of the previous run of this agent "
                           rf"\(pid {old_pid}", after=mark_agent)
    back = time.monotonic() - killed
    rig.agent.wait_log(r"joined as compute1 \(incarnation \d+, join #1\): the membership of "
                       r"the resumed session, kept", after=mark_agent)
    time.sleep(5.0)  # longer than the 4 s session: a vanish would have shown by now
    assert rig.phase_changes(mark_ctl) == []
    rig.untouched()
    fault.observed(f"agent back {back:.2f} s after the SIGKILL (seen by the test): "
                   f"'{m.group(0)}...'; the controller logged no phase change; BMC power "
                   f"requests 0; evacuations 0")


@pytest.mark.fault("SIGHUP to the agent", component="agent",
                   expect="the configuration is re-read (log level, watched processes); the "
                          "agent never ends; nothing fenced")
def test_sighup_reloads_and_never_ends_the_agent(alive, fault):
    rig = alive
    conf_path = os.path.join(rig.factory.workdir, f"{rig.victim}.conf")
    original = open(conf_path).read()
    mark_ctl, mark_agent, pid = rig.ctl.log_size(), rig.agent.log_size(), rig.agent.pid
    try:
        changed = original.replace("debug = false", "debug = true").replace(
            "watched_processes = nova-compute:", "watched_processes = ovs-test:no-such-proc,"
            "nova-compute:")
        assert changed != original
        with open(conf_path, "w") as f:
            f.write(changed)
        rig.agent.signal(signal.SIGHUP)
        rig.agent.wait_log(r"SIGHUP: configuration reloaded from .*\[DEFAULT\] debug, "
                           r"\[agent\] watched_processes", after=mark_agent)
        rig.agent.wait_log(r"watched processes now nova-compute:.*ovs-test:no-such-proc",
                           after=mark_agent)
        rig.agent.wait_log(r"local services: nova-compute=running, ovs-test=NOT running",
                           after=mark_agent)
        rig.agent.wait_log(r" DEBUG ", after=mark_agent)  # the new log level
    finally:
        with open(conf_path, "w") as f:
            f.write(original)
        rig.agent.signal(signal.SIGHUP)
    rig.agent.wait_log(r"local services: nova-compute=running$", after=mark_agent)
    assert rig.agent.proc.poll() is None and rig.agent.pid == pid
    assert rig.phase_changes(mark_ctl) == []
    rig.untouched()
    fault.observed("the agent logged 'SIGHUP: configuration reloaded' (debug, "
                   "watched_processes), checked the new process at once and published it; "
                   "same pid; no phase change; BMC power requests 0; evacuations 0")


@pytest.mark.fault("Uncaught exception in the agent's main loop", component="agent",
                   expect="the agent exits with status 70, systemd restarts it and it resumes "
                          "its session: nothing fenced")
def test_an_exception_in_the_main_loop_restarts_the_agent(alive, fault):
    rig = alive
    mark_ctl, mark_agent, old_pid = rig.ctl.log_size(), rig.agent.log_size(), rig.agent.pid
    open(rig.crash_file, "w").close()
    status = wait_for(lambda: rig.agent.proc.poll(), 30, "the agent to end", interval=0.02)
    rig.restart_agent()
    assert status == 70
    rig.agent.wait_log(r"uncaught RuntimeError in the main loop: exiting with status 70",
                       after=mark_agent)
    rig.agent.wait_log(rf"resumed session 0x[0-9a-f]+ of the previous run of this agent "
                       rf"\(pid {old_pid}", after=mark_agent)
    time.sleep(5.0)
    assert rig.phase_changes(mark_ctl) == []
    rig.untouched()
    assert "Traceback" in rig.agent.read_log()[mark_agent:]  # the bug is in the log
    fault.observed("exit status 70, 'uncaught RuntimeError in the main loop' logged with its "
                   "traceback; the restarted agent resumed the session; no phase change; BMC "
                   "power requests 0; evacuations 0")


@pytest.mark.fault("Agent down longer than its session timeout, the host alive",
                   component="agent",
                   expect="the second source (the host's management address answers) holds it "
                          "as AGENT_DOWN, 'agent dead, host alive': journaled, in instanceha "
                          "status, never fenced; HEALTHY again when the agent is back")
def test_an_agent_down_past_its_session_is_held_by_the_second_source(alive, fault):
    rig = alive
    mark_ctl = rig.ctl.log_size()
    killed = time.monotonic()
    rig.agent.kill()
    m = rig.ctl.wait_log(rf"host={rig.victim} phase=SUSPECT->AGENT_DOWN rule=agent-dead "
                         r"reason=agent dead, host alive", timeout=30, after=mark_ctl)
    held = time.monotonic() - killed
    time.sleep(3.0)  # probed again every second meanwhile: still held, nothing fenced
    assert rig.phase_changes(mark_ctl) == ["HEALTHY->SUSPECT", "SUSPECT->AGENT_DOWN"]
    rig.untouched()
    status = rig.factory.cli("status")
    assert status.returncode == 1, status.stderr
    assert f"ALERT agent dead, host alive: {rig.victim}" in status.stdout
    assert re.search(rf"^{rig.victim}\s+AGENT_DOWN", status.stdout, re.M)
    listed = rig.factory.cli("incidents", "--host", rig.victim, "--open", "--format", "json")
    assert listed.returncode == 1, listed.stderr  # an alert for an operator
    (incident,) = [i for i in json.loads(listed.stdout) if i["state"] == "agent-down"]
    mark = rig.ctl.log_size()
    back = time.monotonic()
    rig.restart_agent()
    rig.ctl.wait_log(rf"host={rig.victim} phase=AGENT_DOWN->HEALTHY", timeout=30, after=mark)
    healthy = time.monotonic() - back
    shown = wait_for(lambda: (r := rig.factory.cli("incidents", "show", incident["id"],
                                                   "--format", "json")).returncode == 0
                     and json.loads(r.stdout)["incident"]["state"] == "closed" and r,
                     30, "the alert incident closed")
    entries = json.loads(shown.stdout)["entries"]
    assert entries[0]["text"].startswith("agent dead, host alive")
    assert "the agent is back" in entries[-1]["text"]
    rig.untouched()
    fault.observed(f"AGENT_DOWN (rule agent-dead) {held:.2f} s after the kill; 'instanceha "
                   f"status' exit 1 with 'ALERT agent dead, host alive'; incident "
                   f"{incident['id']} agent-down, closed when the agent came back (HEALTHY "
                   f"{healthy:.2f} s after its restart); BMC power requests 0; evacuations 0; "
                   f"controller: '{m.group(0)[:60]}...'")


@pytest.mark.fault("Whole host dead: agent and nova-compute SIGKILLed, its address silent",
                   component="agent",
                   expect="the second source is silent too: FAILED (rule dead), fenced (its BMC "
                          "reads off) and recovered, as before the second source")
def test_a_whole_host_death_is_still_fenced_and_recovered(alive, fault):
    rig = alive
    host, bmc = rig.other, rig.other_bmc
    mark = rig.ctl.log_size()
    t0 = time.monotonic()
    rig.agents[host].kill()
    rig.cloud.kill_host(host)
    m = rig.ctl.wait_log(rf"host={host} phase=SUSPECT->FAILED rule=dead reason=.*does not "
                         r"answer the second source either", timeout=60, after=mark)
    failed = time.monotonic() - t0
    rig.ctl.wait_log(rf"host={host} fenced: ipmi read back off", timeout=120, after=mark)
    fenced = time.monotonic() - t0
    assert not bmc.powered_on() and bmc.power_off_requests() == 1
    recovered(rig.nova, host)
    changes = re.findall(rf"host={host} phase=(\w+->\w+)", rig.ctl.read_log()[mark:])
    assert changes[:2] == ["HEALTHY->SUSPECT", "SUSPECT->FAILED"], changes
    # the host comes back: powered on, its address and nova-compute back, a new agent
    bmc.set_power(True)
    rig.cloud.start_compute(host)
    rig.agents[host].start()
    rig.ctl.wait_log(rf"host={host} back in service", timeout=300, after=mark)
    rig.untouched()  # the other host's death touched nothing of the victim's
    fault.observed(f"phases {' '.join(changes[:2])} ('{m.group(0)[:90]}...'): FAILED "
                   f"{failed:.2f} s after the kill (seen by the test), power-off read back "
                   f"{fenced:.2f} s; recovered, back in service after the repair")
