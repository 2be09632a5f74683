"""Session liveness on a 3-node ZooKeeper ensemble: a killed, a frozen and a
hung agent are each FAILED by the right rule while the live one stays
HEALTHY; the agents' sessions are spread over the servers by kazoo."""

from __future__ import annotations

import os
import sys
import time

import harness
import pytest

from tests.functional.chaos import logs
from tests.functional.conftest import Observer

pytestmark = pytest.mark.functional
HANG_AGENT = os.path.join(os.path.dirname(harness.__file__), "hang_agent.py")


@pytest.mark.fault(
    "Agents killed (SIGKILL), frozen (SIGSTOP) and main loop hung, on a 3-node ensemble",
    component="agent",
    expect="each FAILED: killed and frozen by the dead rule at their session's expiry, the "
           "hung one by the hung rule from its watchdog's stall report; the live agent stays "
           "HEALTHY and its session untouched")
def test_faults_detected_on_an_ensemble(fault, ensemble, daemon_factory, tmp_path, root_path):
    flag = tmp_path / "hang"
    where = logs.coordination(ensemble.url)
    agents = {n: daemon_factory("agent", n, extra=where)
              for n in ("killed", "frozen", "live")}
    agents["hung"] = daemon_factory(
        "agent", "hung", extra=dict(where, agent={"health_check_interval": 0.1}),
        argv_prefix=[sys.executable, HANG_AGENT], env={"INSTANCEHA_TEST_HANG_FILE": str(flag)})
    observer = Observer(ensemble, root_path)
    try:
        for n in agents:
            observer.wait_phase(n, "HEALTHY")
        live = observer.view("live").incarnation
        servers = {s.client_port for s in ensemble.running()
                   for sid in s.connections() if sid in _owners(observer, root_path)}
        at = time.monotonic()
        agents["killed"].kill()
        agents["frozen"].freeze()
        flag.write_text("hang")
        for n in ("killed", "frozen", "hung"):
            observer.wait_phase(n, "FAILED")
        rules = {n: observer.view(n).rule for n in ("killed", "frozen", "hung")}
        assert rules == {"killed": "dead", "frozen": "dead", "hung": "hung"}
        assert observer.phases_seen("live") == ["HEALTHY"]
        assert observer.view("live").incarnation == live
        took = {n: _entered(observer, n, at) for n in rules}
        fault.observed(f"agents connected to {len(servers)} of the 3 servers; FAILED after "
                       + ", ".join(f"{n} {took[n]:.2f} s (rule {rules[n]})" for n in rules)
                       + "; the live agent HEALTHY throughout, same session")
    finally:
        flag.unlink(missing_ok=True)
        agents["frozen"].thaw()
        observer.close()


def _owners(observer, root_path) -> set[int]:
    """The sessions holding a membership: each live member's incarnation."""
    return {m.incarnation for m in observer.coordinator.snapshot().members.values()}


def _entered(observer, host, since):
    with observer.lock:
        return next(t.at for t in observer.transitions
                    if t.host == host and t.after.phase.value == "FAILED") - since



