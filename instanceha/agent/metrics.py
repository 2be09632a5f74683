"""The agent's metrics, built at scrape time from the agent's state."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class AgentMetrics:
    def __init__(self, agent, registry: CollectorRegistry | None = None) -> None:
        self.agent = agent
        self.registry = registry or CollectorRegistry()
        self.registry.register(self)

    def describe(self):
        return []

    def collect(self):
        a = self.agent
        joined = GaugeMetricFamily("instanceha_agent_joined",
                                   "1 while the agent's membership lives in this session.")
        joined.add_metric([], 1 if a.is_joined() else 0)
        yield joined
        beats = CounterMetricFamily("instanceha_agent_heartbeats",
                                    "Data heartbeats written.")
        beats.add_metric([], a.heartbeats)
        yield beats
        joins = CounterMetricFamily("instanceha_agent_joins", "Joins (a rejoin follows a "
                                    "session loss).")
        joins.add_metric([], a.joins)
        yield joins
        svc = GaugeMetricFamily("instanceha_agent_service_running",
                                "1 while a watched local service runs.", labels=["service"])
        for name, up in sorted(a.services.items()):
            svc.add_metric([name], 1 if up else 0)
        yield svc
