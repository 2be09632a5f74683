"""/metrics, /healthz and /readyz of the real daemons."""

import os
import sys
import urllib.error
import urllib.request

import harness
import pytest
from harness import daemons, procs

pytestmark = pytest.mark.functional
HANG_AGENT = os.path.join(os.path.dirname(harness.__file__), "hang_agent.py")


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_controller_metrics_are_built_from_its_view(daemon_factory):
    port = procs.free_port()
    agent = daemon_factory("agent", "compute1")
    ctl = daemon_factory("controller", "ctl-a", extra={"telemetry": {"controller_port": port}})
    ctl.wait_log(r"host=compute1 phase=\w+->HEALTHY")
    ctl.wait_log(r"leadership gained")
    assert get(port, "/healthz")[0] == 200
    assert get(port, "/readyz")[0] == 200
    code, text = get(port, "/metrics")
    assert code == 200
    assert "instanceha_leader 1.0" in text
    assert 'instanceha_host_phase{host="compute1",phase="HEALTHY"} 1.0' in text
    assert 'instanceha_hosts{phase="HEALTHY"} 1.0' in text
    agent.kill()
    ctl.wait_log(r"host=compute1 phase=\w+->FAILED")
    daemons.wait_until(
        lambda: 'instanceha_host_phase{host="compute1",phase="FAILED"} 1.0'
        in get(port, "/metrics")[1], 10, "the FAILED phase in /metrics")
    text = get(port, "/metrics")[1]
    # no stale label: the host has exactly one phase series
    assert text.count('instanceha_host_phase{host="compute1"') == 1
    assert "instanceha_detection_latency_seconds_count 1.0" in text
    assert 'instanceha_phase_transitions_total{from_phase="SUSPECT",to_phase="FAILED"}' in text \
        or 'instanceha_phase_transitions_total{from_phase="HEALTHY",to_phase="FAILED"}' in text
    assert get(port, "/nothing")[0] == 404


def test_agent_health_turns_503_when_its_loop_hangs(daemon_factory, observer, tmp_path):
    port = procs.free_port()
    flag = tmp_path / "hang"
    daemon_factory("agent", "compute1",
                   extra={"telemetry": {"agent_port": port, "stall_after": 1.0},
                          "agent": {"health_check_interval": 0.1}},
                   argv_prefix=[sys.executable, HANG_AGENT],
                   env={"INSTANCEHA_TEST_HANG_FILE": str(flag)})
    observer.wait_phase("compute1", "HEALTHY")
    daemons.wait_until(lambda: get(port, "/readyz")[0] == 200, 10, "agent ready")
    code, text = get(port, "/metrics")
    assert "instanceha_agent_joined 1.0" in text
    assert "instanceha_agent_membership_tampered_total 0.0" in text
    flag.write_text("hang")
    daemons.wait_until(lambda: get(port, "/healthz")[0] == 503, 10, "/healthz to turn 503")
    assert "stalled" in get(port, "/healthz")[1]
    flag.unlink()
    daemons.wait_until(lambda: get(port, "/healthz")[0] == 200, 10, "/healthz back to 200")
