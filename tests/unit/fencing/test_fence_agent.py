"""The fence_agent driver against a fake agent runner: what goes on stdin, how
exit codes and output are read, what becomes of a timeout (no process runs)."""

import os
import stat
import subprocess

import pytest

from instanceha.fencing import FencePolicy, Fencer, inventory
from instanceha.fencing import agent_protocol as proto
from instanceha.fencing import exceptions as exc
from instanceha.fencing.agent import SHIMS, FenceAgentDriver, Timeout
from instanceha.fencing.base import PowerState

from .conftest import PASSWORD


class FakeAgent:
    """Answers each run from a table action -> Answer (or an exception)."""

    def __init__(self, answers=None):
        self.answers = dict(answers or {})
        self.runs = []  # (argv, stdin lines as a dict, env, timeout)
        self.snmp_conf = None

    def __call__(self, argv, stdin, env, timeout):
        lines = dict(line.split("=", 1) for line in stdin.splitlines())
        self.runs.append((argv, lines, dict(env), timeout))
        if "SNMPCONFPATH" in env:
            path = os.path.join(env["SNMPCONFPATH"], "snmp.conf")
            with open(path) as f:
                self.snmp_conf = (f.read(), stat.S_IMODE(os.stat(path).st_mode))
        answer = self.answers[lines["action"]]
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def actions(self):
        return [lines["action"] for _, lines, _, _ in self.runs]


ON = proto.Answer(0, "Status: ON\n", "")
OFF = proto.Answer(2, "Status: OFF\n", "")
OK = proto.Answer(0, "Success: Powered OFF\n", "")


def entry(agent="fence_redfish", **raw):
    raw = {"driver": "fence_agent", "agent": agent, "address": "10.0.0.9", "port": 8443,
           "username": "admin", "password": PASSWORD, **raw}
    inv = inventory.from_data({"hosts": {"compute1": raw}}, "/etc/inv.yaml")
    return inv.get("compute1")


def driver(agent=None, e=None, **answers):
    agent = agent or FakeAgent(answers)
    return FenceAgentDriver(e or entry(), runner=agent, find=lambda n: f"/usr/sbin/{n}"), agent


# -- stdin -------------------------------------------------------------------


def test_options_go_on_stdin_and_the_argv_is_the_agent_alone():
    d, agent = driver(e=entry(plug="3", options={"ssl_insecure": True, "systems_uri": "/x"}),
                      status=ON)
    assert d.get_power_state(timeout=4) is PowerState.ON
    argv, lines, env, timeout = agent.runs[0]
    assert argv == ["/usr/sbin/fence_redfish"] and timeout == 4
    assert lines == {"action": "status", "ip": "10.0.0.9", "ipport": "8443",
                     "username": "admin", "plug": "3", "ssl_insecure": "1",
                     "systems_uri": "/x", "password": PASSWORD}


def test_the_agent_gets_a_minimal_environment(monkeypatch):
    monkeypatch.setenv("OS_PASSWORD", "the-controllers-own")
    d, agent = driver(status=ON)
    d.get_power_state()
    env = agent.runs[0][2]
    assert "OS_PASSWORD" not in env and env["LANG"] == "C" and "/usr/sbin" in env["PATH"]


def test_fence_ipmilan_gets_a_placeholder_and_the_password_in_its_environment():
    d, agent = driver(e=entry("fence_ipmilan", options={"lanplus": 1}), status=ON)
    d.get_power_state()
    _, lines, env, _ = agent.runs[0]
    assert lines["password"] == proto.PLACEHOLDER and PASSWORD not in lines.values()
    assert env["IPMI_PASSWORD"] == PASSWORD
    assert lines["ipmitool_path"] == os.path.join(SHIMS, "ipmitool")


def test_snmp_community_goes_to_a_private_snmp_conf_not_to_stdin():
    e = entry("fence_apc_snmp", password=None, options={"community": PASSWORD,
                                                          "snmp_version": "2c"})
    d, agent = driver(e=e, status=OFF)
    assert d.get_power_state() is PowerState.OFF
    _, lines, env, _ = agent.runs[0]
    assert lines["community"] == proto.PLACEHOLDER and PASSWORD not in lines.values()
    assert agent.snmp_conf == (f"defCommunity {PASSWORD}\n", 0o600)
    assert not os.path.exists(env["SNMPCONFPATH"])  # removed after the run
    assert lines["snmpset_path"] == os.path.join(SHIMS, "snmpset")


def test_power_requests_bound_the_agents_own_wait_below_the_timeout():
    d, agent = driver(off=OK)
    d.request_power(PowerState.OFF, timeout=10)
    assert agent.runs[0][1]["action"] == "off" and agent.runs[0][1]["power_timeout"] == "5"
    d2, agent2 = driver(e=entry(options={"power_timeout": 3}), off=OK)
    d2.request_power(PowerState.OFF, timeout=10)
    assert agent2.runs[0][1]["power_timeout"] == "3"


# -- answers -------------------------------------------------------------------


@pytest.mark.parametrize("answer, result", [
    (ON, PowerState.ON),
    (OFF, PowerState.OFF),
    (proto.Answer(0, "Status: OFF\n", ""), exc.GarbageReply),  # exit code and text disagree
    (proto.Answer(2, "Status: ON\n", ""), exc.GarbageReply),
    (proto.Answer(2, "", ""), exc.GarbageReply),  # Pacemaker would say off: we do not
    (proto.Answer(2, "\x00\xffgarbage", ""), exc.GarbageReply),
    (proto.Answer(0, "Status: ON\nStatus: OFF\n", ""), exc.GarbageReply),
    (proto.Answer(1, "", "2026 ERROR: Connection timed out\n"), exc.BMCUnreachable),
    (proto.Answer(1, "", "ERROR:root:Unable to connect/login to fencing device\n"),
     exc.AgentLoginFailed),
    (proto.Answer(1, "", "x ERROR: Failed: The user does not have the correct privileges "
                  "to do the requested action.\n"), exc.AuthFailed),
    (proto.Answer(1, "", "Traceback (most recent call last):\n  boom\n"), exc.AgentFailed),
    (proto.Answer(1, "", "ERROR: Failed: send_get_request: Max retries exceeded (Caused by "
                  "NewConnectionError(...))\n"), exc.BMCUnreachable),
    (proto.Answer(7, "", ""), exc.AgentFailed),
    (proto.Answer(-9, "Status: OFF\n", ""), exc.AgentFailed),
])
def test_status_is_read_as_pacemaker_does_and_stricter(answer, result):
    d, _ = driver(status=answer)
    if isinstance(result, PowerState):
        assert d.get_power_state() is result
    else:
        with pytest.raises(result) as e:
            d.get_power_state()
        assert "compute1" in str(e.value) and "fence_redfish" in str(e.value)


def test_a_failed_power_request_is_typed():
    d, _ = driver(off=proto.Answer(1, "", "ERROR: Failed: Timed out waiting to power OFF\n"))
    with pytest.raises(exc.AgentFailed) as e:
        d.request_power(PowerState.OFF)
    assert "Timed out waiting to power OFF" in str(e.value) and e.value.retryable


def test_a_plug_status_failure_hints_at_the_credentials():
    d, _ = driver(status=proto.Answer(1, "", "ERROR: Failed: Unable to obtain correct plug "
                                      "status or plug is not available\n"))
    with pytest.raises(exc.AgentFailed, match="wrong password or username"):
        d.get_power_state()


def test_agent_text_quoted_in_an_error_is_redacted():
    leak = f"ERROR: login admin:{PASSWORD} refused at https://admin:x%40y@10.0.0.9/\n"
    d, _ = driver(status=proto.Answer(1, "", leak))
    with pytest.raises(exc.AgentFailed) as e:
        d.get_power_state()
    assert PASSWORD not in str(e.value) and "x%40y" not in str(e.value)
    assert "******" in str(e.value)


def test_an_option_the_agent_ignores_is_an_inventory_error_naming_it():
    d, _ = driver(e=entry(options={"lanplsu": 1}), status=proto.Answer(
        0, "Status: ON\n", "WARNING:root:Parse error: Ignoring unknown option 'lanplsu=1'\n"))
    with pytest.raises(exc.InventoryError) as e:
        d.get_power_state()
    assert "key options.lanplsu" in str(e.value) and "compute1" in str(e.value)


def test_a_timeout_is_agent_timeout():
    d, _ = driver(status=Timeout())
    with pytest.raises(exc.AgentTimeout) as e:
        d.get_power_state(timeout=3)
    assert "within 3.0 s and was killed" in str(e.value) and e.value.retryable


def test_an_agent_that_is_not_installed_names_the_key():
    d = FenceAgentDriver(entry("fence_nosuch"), runner=FakeAgent(), find=lambda n: None)
    with pytest.raises(exc.InventoryError) as e:
        d.get_power_state()
    assert "key agent" in str(e.value) and "fence-agents" in str(e.value)


def test_monitor_then_status_for_the_check():
    d, agent = driver(monitor=proto.Answer(0, "", ""), status=OFF)
    assert d.monitor() is PowerState.OFF and agent.actions == ["monitor", "status"]
    d2, _ = driver(monitor=proto.Answer(1, "", "ERROR: Connection timed out\n"))
    with pytest.raises(exc.BMCUnreachable):
        d2.monitor()


# -- through the confirm loop ----------------------------------------------------


def fencer(agent, clock, policy=None, **raw):
    inv = inventory.from_data({"hosts": {"compute1": {
        "driver": "fence_agent", "agent": "fence_redfish", "address": "10.0.0.9",
        "username": "admin", "password": PASSWORD, **raw}}})
    return Fencer(inv, policy or FencePolicy(deadline=30, poll_interval=1),
                  driver_factory=lambda e: FenceAgentDriver(e, runner=agent,
                                                            find=lambda n: f"/x/{n}"),
                  clock=clock)


class Switch(FakeAgent):
    """An agent in front of a device whose power really changes on 'off'."""

    def __init__(self):
        super().__init__()
        self.on = True

    def __call__(self, argv, stdin, env, timeout):
        self.answers = {"status": ON if self.on else OFF, "off": OK}
        answer = super().__call__(argv, stdin, env, timeout)
        if self.actions[-1] == "off":
            self.on = False
        return answer


def test_off_through_the_confirm_loop(clock):
    agent = Switch()
    ev = fencer(agent, clock).power_off("compute1")
    assert ev.read_back is PowerState.OFF and ev.attempts == 1 and ev.driver == "fence_agent"
    assert agent.actions == ["status", "off", "status"]
    assert ev.devices == ("fence_redfish at 10.0.0.9",)


def test_a_hanging_agent_never_fences(clock):
    agent = FakeAgent({"status": Timeout(), "off": Timeout()})
    with pytest.raises(exc.AgentTimeout):
        fencer(agent, clock, timeout=5).power_off("compute1")
    assert clock.now - 1000 >= 30 and "off" in agent.actions


def test_garbage_is_never_off_and_stops_the_loop(clock):
    agent = FakeAgent({"status": proto.Answer(2, "lorem ipsum", ""), "off": OK})
    with pytest.raises(exc.GarbageReply):
        fencer(agent, clock).power_off("compute1")
    assert agent.actions == ["status"]  # an escalation: nothing was powered


# -- the shim (a real sh, a recording stand-in for the helper) -------------------


def _recorder(tmp_path):
    rec = tmp_path / "helper"
    rec.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n'
                   'printf "IPMI_PASSWORD=%s\\n" "${IPMI_PASSWORD:-}"\n')
    rec.chmod(0o755)
    return str(rec)


@pytest.mark.parametrize("prog, given, passed", [
    ("ipmitool", ["-I", "lanplus", "-P", proto.PLACEHOLDER, "chassis", "power", "status"],
     ["-I", "lanplus", "-E", "chassis", "power", "status"]),
    ("ipmitool", ["-P", "not the placeholder", "x y"], ["-P", "not the placeholder", "x y"]),
    ("snmpset", ["-m", "", "-c", proto.PLACEHOLDER, "-v", "2c", "127.0.0.1:1", ".1.3", "i", "2"],
     ["-m", "", "-v", "2c", "127.0.0.1:1", ".1.3", "i", "2"]),
    ("snmpget", ["-v", "3", "-A", proto.PLACEHOLDER, "-X", proto.PLACEHOLDER, "h"],
     ["-v", "3", "h"]),
])
def test_shim_takes_the_placeholder_off_the_command_line(tmp_path, prog, given, passed):
    env = {"PATH": "/usr/bin:/bin", f"INSTANCEHA_SHIM_BIN_{prog}": _recorder(tmp_path),
           "IPMI_PASSWORD": PASSWORD}
    out = subprocess.run([os.path.join(SHIMS, prog), *given], env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out == passed + [f"IPMI_PASSWORD={PASSWORD}"]


def test_shim_refuses_an_unknown_program():
    r = subprocess.run([os.path.join(SHIMS, "secretshim"), "rm", "-rf", "/nonexistent"],
                       capture_output=True, text=True)
    assert r.returncode == 64 and "unknown program" in r.stderr


def test_a_run_cut_short_by_the_deadline_does_not_hide_the_error_before_it(clock):
    """Each run costs time: the last one, squeezed into what is left of the
    deadline, may time out; the error reported is still the agent's own."""
    refused = proto.Answer(1, "", "ERROR: Unable to get PowerState: https://10.0.0.9/\n")

    class Slow(FakeAgent):
        def __call__(self, argv, stdin, env, timeout):
            clock.now += 4  # every run takes 4 s
            if timeout < 4:
                raise Timeout()
            return super().__call__(argv, stdin, env, timeout)

    agent = Slow({"status": refused, "off": refused})
    with pytest.raises(exc.AgentFailed, match="Unable to get PowerState"):
        fencer(agent, clock, FencePolicy(deadline=30, poll_interval=1, retry_backoff=0.5,
                                         retry_backoff_max=0.5), timeout=5).power_off("compute1")
    assert clock.now - 1000 >= 30 and len(agent.runs) >= 6
