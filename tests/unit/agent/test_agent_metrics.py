"""The agent's /metrics on a real Agent (a fake coordinator): every family
is produced, with and without a guest monitor."""

from prometheus_client import generate_latest

from instanceha.agent.metrics import AgentMetrics
from instanceha.agent.service import Agent, AgentSettings
from tests.unit.clock import FakeClock
from tests.unit.fakes import FakeCoordinator


class _Monitor:
    """The guest monitor's surface the metrics read (agent.guest_monitor)."""

    losses = 2
    seen = {"crashed": 1}
    forwarded = 1
    dropped = 0

    def pending(self):
        return 0

    def start(self):
        pass

    def stop(self):
        pass

    def status(self):
        return {"state": "connected"}


def _text(guest_monitor=None) -> str:
    clock = FakeClock()
    agent = Agent(FakeCoordinator(clock), AgentSettings(host="compute1"),
                  probe=lambda: {"nova-compute": True}, clock=clock,
                  guest_monitor=guest_monitor)
    agent.step()
    return generate_latest(AgentMetrics(agent).registry).decode()


def test_metrics_without_a_guest_monitor():
    text = _text()
    assert "instanceha_agent_joined 1.0" in text
    assert 'instanceha_agent_service_running{service="nova-compute"} 1.0' in text
    assert "instanceha_agent_libvirt_connected" not in text


def test_metrics_with_a_guest_monitor():
    text = _text(_Monitor())
    assert "instanceha_agent_libvirt_connected 1.0" in text
    assert "instanceha_agent_libvirt_connection_losses_total 2.0" in text
    assert 'instanceha_agent_guest_failures_total{kind="crashed"} 1.0' in text
