"""The controller's metrics: a custom collector over its latest view, and
counters/histograms fed by its decisions.

Per-host series are built at scrape time from the current views only, so a
forgotten host's labels vanish with it (no stale labels).
"""

from __future__ import annotations

import typing

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from instanceha.compute.evacuation import Outcome
from instanceha.controller.reconciler import Transition
from instanceha.coordination.base import ALERT_KINDS
from instanceha.engine.model import Phase

if typing.TYPE_CHECKING:
    from instanceha.controller.service import ControllerService

FENCE_RESULTS = ("ok", "attested", "error")
DETECTION_BUCKETS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 60.0)


class ControllerMetrics:
    def __init__(self, service: ControllerService,
                 registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        self.transitions = Counter(
            "instanceha_phase_transitions_total", "Host phase transitions decided.",
            ["from_phase", "to_phase"], registry=self.registry)
        self.detection = Histogram(
            "instanceha_detection_latency_seconds",
            "Heartbeat age of a host when it was decided FAILED: time from its last "
            "heartbeat seen to the decision.", buckets=DETECTION_BUCKETS,
            registry=self.registry)
        self.fences = Counter(
            "instanceha_fences_total", "Fence attempts by result (ok, attested, error).",
            ["result"], registry=self.registry)
        self.fence_levels = Counter(
            "instanceha_fence_level_total", "Confirmed power-offs by the fencing level that "
            "confirmed them (from 1) and its devices (agent or driver, address, plug).",
            ["level", "devices"], registry=self.registry)
        self.fence_duration = Histogram(
            "instanceha_fence_duration_seconds", "Power-off requested to OFF read back.",
            buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120), registry=self.registry)
        self.evacuations = Counter(
            "instanceha_evacuations_total", "Evacuations by outcome (evacuated, failed, "
            "no capacity).", ["result"], registry=self.registry)
        self.evacuation_duration = Histogram(
            "instanceha_evacuation_duration_seconds", "Evacuation requested to the server "
            "verified on its new host.", buckets=(2, 5, 10, 20, 30, 60, 120, 300, 600),
            registry=self.registry)
        # every result from 0: increase() in an alert sees a first error (a child born
        # at 1 has no earlier sample to increase from)
        for result in FENCE_RESULTS:
            self.fences.labels(result)
        for outcome in Outcome:
            self.evacuations.labels(outcome.value)
        self.safety_holds = Counter(
            "instanceha_safety_holds_total", "Safety holds raised by the mass-failure guard.",
            registry=self.registry)
        self.guest_failures = Counter(
            "instanceha_guest_failures_total", "Guest failures handled by the leader, by kind "
            "(crashed, stopped_failed, watchdog...) and outcome (restarted, notified, ignored, "
            "gave_up, left_alone...).", ["kind", "outcome"], registry=self.registry)
        self.guest_latency = Histogram(
            "instanceha_guest_failure_handling_seconds", "Agent saw the guest failure to the "
            "leader done with it (restart requested, notification emitted...).",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300), registry=self.registry)
        self.notifier = None  # set when the bus is configured: its stats are exported
        self.journal = None  # set when the incident journal runs: its backlog is exported
        self.nova_events = None  # set when Nova's notifications are listened to
        self.api_calls = None  # set with Nova: the ApiCalls its client reports to
        self.registry.register(_Collector(self))

    # called by the recovery actuator
    def fence(self, result: str, duration: float | None = None) -> None:
        self.fences.labels(result).inc()
        if duration is not None:
            self.fence_duration.observe(duration)

    def fence_level(self, level: int, devices) -> None:
        self.fence_levels.labels(str(level), ", ".join(devices)).inc()

    def evacuation(self, result: str, seconds: float | None = None) -> None:
        self.evacuations.labels(result).inc()
        if seconds is not None and result == "evacuated":
            self.evacuation_duration.observe(seconds)

    def guest(self, kind: str, outcome: str, seconds: float | None = None) -> None:
        self.guest_failures.labels(kind, outcome).inc()
        if seconds is not None and outcome not in ("coalesced", "waiting"):
            self.guest_latency.observe(seconds)

    def on_transition(self, t: Transition) -> None:
        before = t.before.phase.value if t.before else "NEW"
        self.transitions.labels(before, t.after.phase.value).inc()
        if t.after.phase is Phase.FAILED and (t.before is None or t.before.phase
                                              is not Phase.FAILED):
            snap = self.service.reconciler.last_snapshot if self.service.reconciler else None
            if snap is not None:
                self.detection.observe(snap.heartbeat_age(t.host))


class _Collector:
    def __init__(self, metrics: ControllerMetrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        svc = self.metrics.service
        rec = svc.reconciler
        views = dict(rec.views) if rec else {}
        snap = rec.last_snapshot if rec else None
        lead = svc.leadership
        leader = GaugeMetricFamily("instanceha_leader",
                                   "1 while this controller leads, else 0.")
        leading = lead is not None and lead.is_leader()
        leader.add_metric([], 1 if leading else 0)
        yield leader
        connected = GaugeMetricFamily("instanceha_coordinator_connected",
                                      "1 while the coordinator session is connected.")
        connected.add_metric([], 1 if snap is not None and snap.connected_for > 0 else 0)
        yield connected
        stats = svc.coordinator.stats()
        alerts = CounterMetricFamily(
            "instanceha_coordination_alerts", "Entries of the coordination store the view "
            "refused to trust (forged by another identity) and membership nodes deleted "
            "while their session lived, by kind: never acted on, journaled by the leader.",
            labels=["kind"])
        for kind in ALERT_KINDS:
            alerts.add_metric([kind], stats.get(kind, 0))
        yield alerts
        by_phase = GaugeMetricFamily("instanceha_hosts", "Hosts by phase.", labels=["phase"])
        for phase in Phase:
            by_phase.add_metric([phase.value],
                                sum(1 for v in views.values() if v.phase is phase))
        yield by_phase
        per_host = GaugeMetricFamily("instanceha_host_phase",
                                     "1 for the current phase of each host.",
                                     labels=["host", "phase"])
        age = GaugeMetricFamily("instanceha_host_heartbeat_age_seconds",
                                "Seconds since the host's last heartbeat was seen.",
                                labels=["host"])
        for host, v in sorted(views.items()):
            per_host.add_metric([host, v.phase.value], 1)
            if snap is not None:
                age.add_metric([host], snap.heartbeat_age(host))
        yield per_host
        yield age
        yield from _recovery(svc, leading)
        notifier = self.metrics.notifier
        if notifier is not None:
            stats = notifier.stats()
            sent = CounterMetricFamily("instanceha_notifications",
                                       "Notifications emitted, delivered and lost.",
                                       labels=["state"])
            sent.add_metric(["emitted"], stats.emitted)
            sent.add_metric(["delivered"], stats.delivered)
            sent.add_metric(["lost"], stats.lost)
            yield sent
            failed = CounterMetricFamily("instanceha_notification_delivery_failures",
                                         "Failed delivery attempts (each retried).")
            failed.add_metric([], stats.failed_attempts)
            yield failed
            pending = GaugeMetricFamily("instanceha_notifications_pending",
                                        "Notifications waiting for the bus.")
            pending.add_metric([], stats.pending)
            yield pending
        journal = self.metrics.journal
        if journal is not None:
            backlog = GaugeMetricFamily("instanceha_incident_journal_pending",
                                        "Incident journal entries not yet written to the "
                                        "coordinator.")
            backlog.add_metric([], journal.pending())
            yield backlog
            lost = CounterMetricFamily("instanceha_incident_journal_dropped",
                                       "Incident journal entries dropped (queue full while "
                                       "the coordinator was away).")
            lost.add_metric([], journal.dropped)
            yield lost
        feed = self.metrics.nova_events
        if feed is not None:
            seen = CounterMetricFamily("instanceha_nova_notifications",
                                       "Nova's versioned notifications received, and those "
                                       "that woke an evacuation waiting on their instance.",
                                       labels=["state"])
            seen.add_metric(["received"], feed.received)
            seen.add_metric(["woke"], feed.woke)
            yield seen
            listening = GaugeMetricFamily("instanceha_nova_notifications_listening",
                                          "1 while this controller listens to Nova's "
                                          "notifications (the leader only).")
            listening.add_metric([], 1 if feed.listening else 0)
            yield listening
        if self.metrics.api_calls is not None:
            yield from _api_calls(self.metrics.api_calls)
        describe = getattr(svc.hooks.aggregates, "describe", None)
        if describe is not None:
            info = describe()
            age = GaugeMetricFamily("instanceha_aggregates_age_seconds",
                                    "Seconds since Nova's host aggregates were last read for "
                                    "the guard's per-aggregate limits (absent: never read).")
            if info.get("age") is not None:
                age.add_metric([], info["age"])
            yield age
        guests = svc.duties.guests
        if guests is not None:
            queued = GaugeMetricFamily("instanceha_guest_failures_pending",
                                       "Guest failures in the coordinator's queue, not yet "
                                       "handled (leader only).")
            queued.add_metric([], guests.pending_count)
            yield queued
        capacity = svc.duties.capacity
        if capacity is not None:
            yield from _capacity(capacity.report())
        hold = GaugeMetricFamily("instanceha_safety_hold",
                                 "1 while the mass-failure guard holds every fence.")
        held = rec is not None and rec.executor.guard_state.held
        hold.add_metric([], 1 if held else 0)
        yield hold


def _recovery(svc, leading: bool):
    """The state of instanceha's marker in Nova per host, as the leader last read it
    (a standby does not read Nova: no series)."""
    status = svc.handler.nova_status() if leading else None
    if status is None:
        return
    family = GaugeMetricFamily("instanceha_host_recovery",
                               "1 for the state of instanceha's marker in Nova of each host "
                               "that has one (fenced, recovering, recovered, held, reserved), "
                               "as the leader last read it.", labels=["host", "state"])
    for host, nova in sorted(status.items()):
        if nova.get("marker"):
            family.add_metric([host, nova["marker"]], 1)
    yield family


def _api_calls(calls):
    totals, seconds = calls.snapshot()
    count = CounterMetricFamily("instanceha_api_requests",
                                "OpenStack API requests made by this controller, by service, "
                                "method, path template and status (none: no answer).",
                                labels=["service", "method", "path", "status"])
    for key, n in sorted(totals.items()):
        count.add_metric(list(key), n)
    yield count
    spent = CounterMetricFamily("instanceha_api_request_seconds",
                                "Seconds spent waiting for OpenStack API answers.",
                                labels=["service", "method", "path"])
    for key, s in sorted(seconds.items()):
        spent.add_metric(list(key), s)
    yield spent


def _capacity(report):
    """Failover coverage, from the capacity monitor's report (leader only: a
    standby has none; absent series rather than stale ones)."""
    covered = GaugeMetricFamily("instanceha_capacity_covered",
                                "1 while every failure the [capacity] tolerance counts finds "
                                "room for all its evacuable servers, 0 when not (absent: not "
                                "known yet).")
    uncovered = GaugeMetricFamily("instanceha_capacity_uncovered",
                                  "Failures whose evacuable servers would not all find room, "
                                  "by kind: host (each host on its own), domain (each failure "
                                  "domain as a whole).", labels=["kind"])
    short = GaugeMetricFamily("instanceha_capacity_shortfall",
                              "What the worst counted failure's servers lack, by Placement "
                              "resource class (VCPU, MEMORY_MB...): add this to be covered.",
                              labels=["resource_class"])
    age = GaugeMetricFamily("instanceha_capacity_age_seconds",
                            "Seconds since the capacity model was last read from Placement "
                            "and Nova.")
    if report.get("covered") is not None:
        covered.add_metric([], 1 if report["covered"] else 0)
        counts = report.get("counts") or {}
        uncovered.add_metric(["host"], counts.get("uncovered_hosts", 0))
        uncovered.add_metric(["domain"], counts.get("uncovered_domains", 0))
        for rc, n in sorted((report.get("shortfall") or {}).items()):
            short.add_metric([rc], n)
    if report.get("age") is not None:
        age.add_metric([], report["age"])
    yield covered
    yield uncovered
    yield short
    yield age
