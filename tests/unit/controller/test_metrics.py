"""Controller metrics from a fresh registry: counters fed by the actuator, the
bus's stats, and per-host series built from the current view only."""

from prometheus_client import CollectorRegistry, generate_latest

from instanceha.controller.metrics import ControllerMetrics
from instanceha.controller.service import Hooks, LeaderDuties
from instanceha.engine.model import HostView, Phase
from instanceha.notify.outbox import StatsSnapshot
from tests.unit.clock import FakeClock


class Rec:
    def __init__(self, views):
        self.views = views
        self.last_snapshot = None
        self.executor = type("E", (), {"guard_state": type("G", (), {"held": False})()})()


class Coord:
    def __init__(self):
        self.counts = {}

    def stats(self):
        return dict(self.counts, reads=3)


class Svc:
    def __init__(self, views):
        self.reconciler = Rec(views)
        self.leadership = None
        self.hooks = Hooks()
        self.duties = LeaderDuties()
        self.coordinator = Coord()


class Bus:
    def stats(self):
        return StatsSnapshot(emitted=7, delivered=5, failed_attempts=3, lost_deadline=1,
                             pending=1)


def text(m):
    return generate_latest(m.registry).decode()


def test_counters_histograms_and_bus_stats():
    m = ControllerMetrics(Svc({"c1": HostView("c1", Phase.FAILED, 0, "r", "dead")}),
                          CollectorRegistry())
    m.fence("ok", 0.3)
    m.fence("error")
    m.evacuation("evacuated", 8.0)
    m.evacuation("no capacity", 30.0)
    m.notifier = Bus()
    out = text(m)
    assert 'instanceha_fences_total{result="ok"} 1.0' in out
    assert 'instanceha_fences_total{result="error"} 1.0' in out
    assert "instanceha_fence_duration_seconds_count 1.0" in out
    assert 'instanceha_evacuations_total{result="no capacity"} 1.0' in out
    assert "instanceha_evacuation_duration_seconds_count 1.0" in out
    assert 'instanceha_notifications_total{state="lost"} 1.0' in out
    assert "instanceha_notification_delivery_failures_total 3.0" in out
    assert "instanceha_notifications_pending 1.0" in out
    assert 'instanceha_host_phase{host="c1",phase="FAILED"} 1.0' in out


def test_incident_journal_backlog_is_exported():
    m = ControllerMetrics(Svc({}), CollectorRegistry())
    assert "instanceha_incident_journal" not in text(m)  # no journal, no series
    m.journal = type("J", (), {"pending": lambda self: 4, "dropped": 2})()
    out = text(m)
    assert "instanceha_incident_journal_pending 4.0" in out
    assert "instanceha_incident_journal_dropped_total 2.0" in out


def test_age_of_the_guards_aggregates_is_exported_when_known():
    svc = Svc({})
    m = ControllerMetrics(svc, CollectorRegistry())
    assert "instanceha_aggregates_age_seconds" not in text(m)  # no Nova: no series
    info = {"known": False, "count": None, "age": None, "error": "403"}
    svc.hooks.aggregates = type("A", (), {"describe": lambda self: info})()
    assert "\ninstanceha_aggregates_age_seconds " not in text(m)  # never read: no sample
    info.update(known=True, count=2, age=12.5)
    assert "instanceha_aggregates_age_seconds 12.5" in text(m)


def test_the_leaders_duties_are_exported_when_built():
    svc = Svc({})
    m = ControllerMetrics(svc, CollectorRegistry())
    assert "instanceha_guest_failures_pending" not in text(m)  # no guest actuator
    svc.duties = LeaderDuties(guests=type("G", (), {"pending_count": 3})())
    assert "instanceha_guest_failures_pending 3.0" in text(m)


def test_forgotten_host_has_no_series():
    svc = Svc({"c1": HostView("c1", Phase.HEALTHY, 0, "r", "alive")})
    m = ControllerMetrics(svc, CollectorRegistry())
    assert 'host="c1"' in text(m)
    svc.reconciler.views = {}
    assert 'host="c1"' not in text(m)


def test_nova_notification_counts_are_exported_when_listening():
    m = ControllerMetrics(Svc({}), CollectorRegistry())
    assert "instanceha_nova_notifications" not in text(m)  # no feed, no series
    m.nova_events = type("F", (), {"received": 9, "woke": 4, "listening": True})()
    out = text(m)
    assert 'instanceha_nova_notifications_total{state="received"} 9.0' in out
    assert 'instanceha_nova_notifications_total{state="woke"} 4.0' in out
    assert "instanceha_nova_notifications_listening 1.0" in out


def test_api_requests_are_exported_by_path_template_and_status():
    from instanceha.compute.calls import ApiCalls
    calls = ApiCalls(clock=FakeClock(now=0.0))
    calls.end(calls.begin("compute", "POST", "/servers/5f1c2a3e-0000-4000-8000-000000000001/"
                          "action"), 202)
    calls.end(calls.begin("compute", "GET", "/os-services?binary=nova-compute"), None)
    m = ControllerMetrics(Svc({}), CollectorRegistry())
    assert "instanceha_api_requests" not in text(m)
    m.api_calls = calls
    out = text(m)
    assert ('instanceha_api_requests_total{method="POST",path="/servers/{id}/action",'
            'service="compute",status="202"} 1.0') in out
    assert ('instanceha_api_requests_total{method="GET",path="/os-services",'
            'service="compute",status="none"} 1.0') in out
    assert "instanceha_api_request_seconds_total" in out


def test_fence_and_evacuation_results_start_at_zero():
    # an alert's increase() sees the first error only if the series was there before
    out = text(ControllerMetrics(Svc({}), CollectorRegistry()))
    for result in ("ok", "attested", "error"):
        assert f'instanceha_fences_total{{result="{result}"}} 0.0' in out
    for result in ("evacuated", "failed", "no capacity"):
        assert f'instanceha_evacuations_total{{result="{result}"}} 0.0' in out


class Lead:
    def __init__(self, leading):
        self.leading = leading

    def is_leader(self):
        return self.leading


def test_recovery_markers_are_exported_by_the_leader_only():
    svc = Svc({"c1": HostView("c1", Phase.FAILED, 0, "r", "dead"),
               "c2": HostView("c2", Phase.HEALTHY, 0, "r", "alive")})
    m = ControllerMetrics(svc, CollectorRegistry())
    assert "instanceha_host_recovery" not in text(m)  # no Nova: no family
    nova = {"c1": {"marker": "recovering"}, "c2": {"marker": None}}
    svc.handler = type("H", (), {"nova_status": lambda self: nova})()
    svc.leadership = Lead(True)
    out = text(m)
    assert 'instanceha_host_recovery{host="c1",state="recovering"} 1.0' in out
    assert 'instanceha_host_recovery{host="c2"' not in out  # no marker of ours
    nova["c1"] = {"marker": "recovered"}
    out = text(m)
    assert 'instanceha_host_recovery{host="c1",state="recovered"} 1.0' in out
    assert 'state="recovering"' not in out  # one state per host, no stale label
    svc.leadership = Lead(False)  # a standby's Nova view is not refreshed
    assert "instanceha_host_recovery{" not in text(m)


def test_coordination_alerts_are_exported_by_kind():
    svc = Svc({})
    svc.coordinator.counts = {"forged-membership": 2, "tampered-membership": 1}
    out = text(ControllerMetrics(svc))
    assert 'instanceha_coordination_alerts_total{kind="forged-membership"} 2.0' in out
    assert 'instanceha_coordination_alerts_total{kind="tampered-membership"} 1.0' in out
    assert 'instanceha_coordination_alerts_total{kind="forged-stall"} 0.0' in out
