"""The agent's metrics, built at scrape time from the agent's state."""

from __future__ import annotations

import typing

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if typing.TYPE_CHECKING:
    from instanceha.agent.service import Agent


class AgentMetrics:
    def __init__(self, agent: Agent, registry: CollectorRegistry | None = None) -> None:
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
        tampered = CounterMetricFamily(
            "instanceha_agent_membership_tampered",
            "The agent's membership nodes deleted by another client while its session lived "
            "(each created again at once).")
        tampered.add_metric([], a.coordinator.stats().get("tampered", 0))
        yield tampered
        joins = CounterMetricFamily("instanceha_agent_joins", "Joins (a rejoin follows a "
                                    "session loss).")
        joins.add_metric([], a.joins)
        yield joins
        svc = GaugeMetricFamily("instanceha_agent_service_running",
                                "1 while a watched local service runs.", labels=["service"])
        for name, up in sorted(a.services.items()):
            svc.add_metric([name], 1 if up else 0)
        yield svc
        monitor = a.health.guest_monitor
        if monitor is None:
            return
        connected = GaugeMetricFamily("instanceha_agent_libvirt_connected",
                                      "1 while the instance monitor's libvirt connection "
                                      "is up (guest failures are seen).")
        connected.add_metric([], 1 if monitor.status()["state"] == "connected" else 0)
        yield connected
        losses = CounterMetricFamily("instanceha_agent_libvirt_connection_losses",
                                     "libvirt connections lost (libvirtd stopped or restarted, "
                                     "keepalive timeout).")
        losses.add_metric([], monitor.losses)
        yield losses
        seen = CounterMetricFamily("instanceha_agent_guest_failures",
                                   "Guest failures seen in libvirt events, by kind.",
                                   labels=["kind"])
        for kind, n in sorted(monitor.seen.items()):
            seen.add_metric([kind], n)
        yield seen
        sent = CounterMetricFamily("instanceha_agent_guest_failures_forwarded",
                                   "Guest failures written to the coordinator for the leader.")
        sent.add_metric([], monitor.forwarded)
        yield sent
        dropped = CounterMetricFamily("instanceha_agent_guest_failures_dropped",
                                      "Guest failures dropped (queue full while the "
                                      "coordinator was away).")
        dropped.add_metric([], monitor.dropped)
        yield dropped
        pending = GaugeMetricFamily("instanceha_agent_guest_failures_pending",
                                    "Guest failures not yet written to the coordinator.")
        pending.add_metric([], monitor.pending())
        yield pending
