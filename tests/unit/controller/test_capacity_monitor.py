"""The capacity model read from (fake) Placement and Nova, and the monitor:
incremental reads, roles, policies, coverage flips, the report."""

import datetime
import gc

import pytest

from instanceha.compute.capacity_reads import GroupRecord, Provider, ServerRecord
from instanceha.compute.model import ComputeService
from instanceha.controller import capacity_report
from instanceha.controller.capacity import CapacityMonitor, CapacitySettings, gc_paused
from instanceha.controller.capacity_reader import ModelReader, ReaderSettings
from instanceha.controller.capacity_report import change_event
from instanceha.engine import capacity as cap
from instanceha.engine.instance_policy import Recovery, priority_name
from instanceha.engine.model import Phase
from instanceha.exceptions import InstanceHAError
from tests.unit.clock import FakeClock
from tests.unit.notify import samples

T0 = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.timezone.utc)
FLAVOR = {"vcpus": 1, "ram": 1024, "disk": 10, "ephemeral": 0, "swap": 0, "extra_specs": {}}


def service(host, up=True, disabled=False, reason=None, forced=False, zone="nova"):
    return ComputeService(id=host, host=host, state="up" if up else "down",
                          status="disabled" if disabled else "enabled", forced_down=forced,
                          disabled_reason=reason, zone=zone, updated_at=None)


def record(sid, host, meta=None, flavor=None, status="ACTIVE", image="img", minute=0):
    return ServerRecord(id=sid, name=sid, host=host, status=status, project_id="p",
                        metadata=meta or {}, flavor=dict(flavor or FLAVOR), image_id=image,
                        zone="nova", updated=T0 + datetime.timedelta(minutes=minute))


class FakeReads:
    """Placement and Nova in memory; counts what is asked."""

    def __init__(self, hosts=("c1", "c2", "c3"), ram=4096):
        self.calls = []
        self.generation = {h: 1 for h in hosts}
        self.inv = {h: {"VCPU": {"total": 8, "reserved": 0, "allocation_ratio": 1.0,
                                 "max_unit": 8},
                        "MEMORY_MB": {"total": ram, "reserved": 0, "allocation_ratio": 1.0,
                                      "max_unit": ram},
                        "DISK_GB": {"total": 1000, "reserved": 0, "allocation_ratio": 1.0}}
                    for h in hosts}
        self.vms = {}
        self.changed = []
        self.groups = []
        self.aggs = []
        self.svcs = {h: service(h) for h in hosts}
        self.images = {"img": {}}
        self.fail = None

    def _call(self, name):
        self.calls.append(name)
        if self.fail is not None:
            raise self.fail

    def boot(self, rec):
        self.vms[rec.id] = rec
        self.changed.append(rec)
        self.generation[rec.host] += 1

    def delete(self, sid, minute=5):
        """As Placement does: deleting allocations does not bump the generation."""
        old = self.vms.pop(sid)
        self.changed.append(record(sid, old.host, status="DELETED", minute=minute))

    def providers(self):
        self._call("providers")
        return [Provider(f"rp-{h}", h, g, f"rp-{h}") for h, g in self.generation.items()]

    def hypervisors(self):
        self._call("hypervisors")
        return {f"rp-{h}": h for h in self.generation}

    def inventories(self, uuid):
        self._call("inventories")
        return self.inv[uuid[3:]]

    def usages(self, uuid):
        self._call("usages")
        host = uuid[3:]
        mine = [s for s in self.vms.values() if s.host == host]
        return {"VCPU": sum(s.flavor["vcpus"] for s in mine),
                "MEMORY_MB": sum(s.flavor["ram"] for s in mine),
                "DISK_GB": sum(s.flavor["disk"] for s in mine if s.image_id)}

    def servers(self, since=None):
        self._call("servers" if since is None else "servers-changed")
        if since is None:
            self.changed = []
            return list(self.vms.values())
        out, self.changed = self.changed, []
        return out

    def server_groups(self):
        self._call("groups")
        return list(self.groups)

    def aggregates(self):
        self._call("aggregates")
        return list(self.aggs)

    def image_properties(self, image_id):
        self._call("image")
        return self.images.get(image_id, {})

    def services(self):
        self._call("services")
        return list(self.svcs.values())


@pytest.fixture
def reads():
    return FakeReads()


def monitor(reads, phases=None, **kw):
    reader = ModelReader(reads, ReaderSettings(default_recovery=Recovery.EVACUATE),
                         phases=lambda: phases or {})
    changes = []
    clock = FakeClock(100.0)
    m = CapacityMonitor(reader, CapacitySettings(**kw), clock=clock, submit=lambda f: f(),
                        on_change=lambda cov, was, at: changes.append((cov.covered, was)))
    m.changes, m.fake_clock = changes, clock
    return m


def boot_many(reads, host, n, meta=None, start=0):
    for i in range(n):
        reads.boot(record(f"{host}-{start + i}", host, meta=meta))


def test_a_first_read_lists_everything_then_only_what_moved(reads):
    boot_many(reads, "c1", 2)
    m = monitor(reads)
    m.tick(leading=True)
    assert m.error is None and m.coverage.covered
    assert reads.calls.count("inventories") == 3 and "servers" in reads.calls
    reads.calls.clear()
    m.fake_clock.advance(60)
    m.tick(leading=True)
    # steady: providers, the changed servers (none), groups, aggregates, services
    assert sorted(reads.calls) == sorted(["providers", "servers-changed", "groups",
                                          "aggregates", "services"])
    reads.calls.clear()
    reads.boot(record("new", "c2", minute=3))
    m.fake_clock.advance(60)
    m.tick(leading=True)
    assert reads.calls.count("inventories") == 1 and reads.calls.count("usages") == 1
    assert m.reader.model.servers["new"].host == "c2"
    reads.calls.clear()
    reads.delete("new")
    m.fake_clock.advance(60)
    m.tick(leading=True)
    assert "new" not in m.reader.model.servers
    # the host it left is read again although its generation did not move
    assert reads.calls.count("usages") == 1
    assert m.reader.model.hosts["c2"].used["MEMORY_MB"] == 0


def test_reads_wait_for_the_interval_unless_nova_said_something(reads):
    m = monitor(reads, refresh_interval=60.0, min_interval=5.0)
    m.tick(leading=True)
    n = len(reads.calls)
    m.fake_clock.advance(2)
    m.poke()
    m.tick(leading=True)
    assert len(reads.calls) == n  # within min_interval
    m.fake_clock.advance(4)
    m.tick(leading=True)
    assert len(reads.calls) > n  # poked, min_interval passed
    n = len(reads.calls)
    m.fake_clock.advance(30)
    m.tick(leading=True)
    assert len(reads.calls) == n


def test_only_the_leader_reads_and_a_new_term_reads_at_once(reads):
    m = monitor(reads)
    m.tick(leading=False)
    assert reads.calls == [] and m.report()["state"] == "standby"
    m.tick(leading=True)
    n = len(reads.calls)
    m.tick(leading=False)
    m.fake_clock.advance(1)
    m.tick(leading=True)
    assert len(reads.calls) > n


@pytest.mark.parametrize("svc, phase, role", [
    (service("c3"), None, cap.Role.TARGET),
    (service("c3"), Phase.DEGRADED, cap.Role.TARGET),
    (service("c3"), Phase.FAILED, cap.Role.OUT),
    (service("c3", up=False), None, cap.Role.OUT),
    (service("c3", forced=True), None, cap.Role.OUT),
    (service("c3", disabled=True, reason="maintenance"), None, cap.Role.OUT),
    (service("c3", disabled=True, reason="instanceha:v1:reserved;at=2026-12-01T00:00:00Z"),
     None, cap.Role.SPARE),
])
def test_host_roles(reads, svc, phase, role):
    reads.svcs["c3"] = svc
    m = monitor(reads, phases={"c3": phase} if phase else None)
    m.tick(leading=True)
    assert m.reader.model.hosts["c3"].role is role


def test_policy_priority_groups_and_domains_are_read(reads):
    reads.boot(record("a", "c1", meta={"instanceha:priority": "high"}))
    reads.boot(record("b", "c1", meta={"instanceha:recovery": "notify"}, image=None))
    reads.boot(record("c", "c1", image="ha-img"))
    reads.boot(record("d", "c2"))  # same image as "a": read once
    reads.boot(record("e", "c2", meta={"instanceha:recovery": "evacuate",
                                        "instanceha:priority": "low"}))  # needs no image
    reads.images["ha-img"] = {"instanceha_priority": "lowest"}
    reads.groups = [GroupRecord("g1", "web", "anti-affinity", 1, ("a", "c"))]
    reads.aggs = [{"name": "rack-1", "hosts": ["c1", "c2"],
                   "metadata": {"instanceha:failure_domain": "true"}},
                  {"name": "r2", "hosts": ["c3"],
                   "metadata": {"instanceha:failure_domain": "rack-2"}}]
    m = monitor(reads)
    m.tick(leading=True)
    model = m.reader.model
    a, b, c = (model.servers[x] for x in "abc")
    assert (a.priority, a.evacuate, a.group) == (400, True, "g1")
    assert (b.evacuate, b.need) == (False, {"VCPU": 1, "MEMORY_MB": 1024})  # boots from volume
    assert (c.priority, c.group) == (100, "g1")
    assert model.groups["g1"].policy is cap.GroupPolicy.ANTI_AFFINITY
    assert {h: model.hosts[h].domain for h in ("c1", "c2", "c3")} == \
        {"c1": "rack-1", "c2": "rack-1", "c3": "rack-2"}
    assert reads.calls.count("image") == 2  # one per image, only for what needs it


def test_coverage_flips_are_reported_once_each(reads):
    boot_many(reads, "c1", 2)
    m = monitor(reads)
    m.tick(leading=True)
    assert m.changes == [(True, None)]
    boot_many(reads, "c2", 4, start=10)  # c2 full: c1's 2 servers fit on c3 only... still
    boot_many(reads, "c3", 3, start=20)  # c3 has room for 1: c1 and c2 not covered
    m.fake_clock.advance(60)
    m.tick(leading=True)
    assert m.changes[-1] == (False, True)
    report = m.report()
    assert report["covered"] is False and report["counts"]["uncovered_hosts"] >= 1
    row = next(f for f in report["failures"] if f["name"] == "c1")
    assert row["covered"] is False and row["without_room"][0]["reason"].startswith("no room")
    assert report["shortfall"]["MEMORY_MB"] > 0
    m.fake_clock.advance(60)
    m.tick(leading=True)
    assert len(m.changes) == 2  # no flip, no report
    event = change_event(m.coverage, True)
    samples.validate(event.event_type, event.payload_dict())
    assert event.payload["covered"] is False and event.payload["uncovered"] >= 1


def test_a_failed_read_keeps_the_last_model_and_says_so(reads):
    m = monitor(reads)
    m.tick(leading=True)
    reads.fail = InstanceHAError("Placement unreachable")
    m.fake_clock.advance(60)
    m.tick(leading=True)
    report = m.report()
    assert report["state"] == "stale" and "Placement unreachable" in report["error"]
    assert report["covered"] is True and report["age"] == 60.0
    reads.fail = None
    m.fake_clock.advance(30)  # retried within 30 s
    m.tick(leading=True)
    assert m.report()["state"] == "ok"


def test_evacuations_in_flight_count_until_a_read_after_they_ended(reads):
    reads.inv["c3"]["MEMORY_MB"]["total"] = 1024
    reads.inv["c2"]["MEMORY_MB"]["total"] = 1024
    boot_many(reads, "c1", 1)
    m = monitor(reads)
    m.tick(leading=True)
    mover = m.server("c1-0")
    other = cap.Server("x", "x", "c9", {"MEMORY_MB": 1024})
    m.dispatched(other, "c2")
    m.dispatched(cap.Server("y", "y", "c9", {"MEMORY_MB": 1024}), "c3")
    assert not m.plan("c1", [mover]).covered
    m.landed("x")
    assert not m.plan("c1", [mover]).covered  # not yet in Placement's usage as read
    m.fake_clock.advance(60)
    m.tick(leading=True)
    assert m.plan("c1", [mover]).target_of("c1-0") == "c2"


def test_the_published_report_is_bounded():

    model = cap.Model()
    from instanceha.engine.capacity_coverage import CoverageTracker

    inv = {"VCPU": cap.Inventory(1)}
    for i in range(200):
        model.set_host(cap.Host(f"h{i:03d}", inv, {"VCPU": 1}))
        model.set_server(cap.Server(f"s{i}", f"s{i}", f"h{i:03d}", {"VCPU": 1}))
    coverage = CoverageTracker(model).refresh()
    small = capacity_report.summary(coverage, model, everything=False)
    assert len(small["failures"]) == capacity_report.MAX_FAILURES_SHOWN
    assert small["more_failures"] == 200 - capacity_report.MAX_FAILURES_SHOWN
    assert small["counts"]["uncovered_hosts"] == 200
    full = capacity_report.summary(coverage, model, everything=True)
    assert len(full["failures"]) == 200 and full["more_failures"] == 0


def test_no_read_before_novas_services_are_known(reads):
    known = {}
    reader = ModelReader(reads, services=lambda: known)
    clock = FakeClock()
    m = CapacityMonitor(reader, clock=clock, submit=lambda f: f())
    m.tick(leading=True)
    assert reads.calls == [] and m.report()["state"] == "unknown"
    known.update(reads.svcs)
    clock.advance(1)
    m.tick(leading=True)
    assert m.report()["state"] == "ok" and "services" not in reads.calls


def test_a_plan_counts_as_load_for_the_next_plans_until_read_or_too_old(reads):
    reads.inv["c3"]["MEMORY_MB"]["total"] = 1024
    reads.inv["c2"]["MEMORY_MB"]["total"] = 1024
    reads.boot(record("a", "c1"))
    reads.boot(record("b", "c1"))
    m = monitor(reads)
    m.tick(leading=True)
    a, b = m.server("a"), m.server("b")
    first = m.plan("c1", [a])
    second = m.plan("c1", [b])  # a's evacuation, planned, takes its room
    assert {first.target_of("a"), second.target_of("b")} == {"c2", "c3"}
    assert m.plan("c1", [a]).target_of("a") == first.target_of("a")  # replanned: itself not counted
    m.fake_clock.advance(1000)  # never sent (the recovery stopped): not counted forever
    m.tick(leading=True)
    third = m.plan("c1", [cap.Server("z", "z", "c1", {"MEMORY_MB": 1024})])
    assert third.covered


def test_a_standby_shows_no_model(reads):
    m = monitor(reads)
    m.tick(leading=True)
    assert m.report()["covered"] is True
    m.tick(leading=False)  # leadership lost: the model is no longer kept current
    assert m.report() == {"state": "standby", "covered": None, "age": None,
                          "revision": m.revision}


def test_aggregates_decide_per_host_and_follow_a_host_moved(reads):
    """A server's priority from its host's aggregates and the host's failure
    domain; servers alike on hosts of one rack decide alike, and a host moved
    to another aggregate takes that one's rules at the next read."""
    reads.aggs = [{"name": "rack-a", "hosts": ["c1", "c2"],
                   "metadata": {"instanceha:priority": "high",
                                "instanceha:failure_domain": "true"}},
                  {"name": "rack-b", "hosts": ["c3"],
                   "metadata": {"instanceha:priority": "low"}}]
    for h in ("c1", "c2", "c3"):
        boot_many(reads, h, 2)
    m = monitor(reads)
    m.tick(leading=True)
    model = m.reader.model
    assert {sid: priority_name(s.priority) for sid, s in model.servers.items()} == {
        "c1-0": "high", "c1-1": "high", "c2-0": "high", "c2-1": "high",
        "c3-0": "low", "c3-1": "low"}
    assert {h: model.hosts[h].domain for h in ("c1", "c2", "c3")} == {
        "c1": "rack-a", "c2": "rack-a", "c3": None}
    reads.aggs[0]["hosts"], reads.aggs[1]["hosts"] = ["c1"], ["c2", "c3"]
    m.fake_clock.advance(61)
    m.tick(leading=True)
    assert {sid: priority_name(s.priority) for sid, s in model.servers.items()} == {
        "c1-0": "high", "c1-1": "high", "c2-0": "low", "c2-1": "low",
        "c3-0": "low", "c3-1": "low"}
    assert {h: model.hosts[h].domain for h in ("c1", "c2", "c3")} == {
        "c1": "rack-a", "c2": None, "c3": None}


def test_a_read_is_applied_with_the_cyclic_collector_paused(reads, monkeypatch):
    """The bulk update allocates half a million objects at 5,000 hosts: the
    collector is paused meanwhile, and runs again afterwards."""
    boot_many(reads, "c1", 2)
    m = monitor(reads)
    seen = []
    apply = m.reader.apply
    monkeypatch.setattr(m.reader, "apply", lambda batch: (seen.append(gc.isenabled()),
                                                          apply(batch)))
    assert gc.isenabled()
    m.tick(leading=True)
    assert seen == [False]
    assert gc.isenabled()
    assert m.coverage is not None and m.error is None


def test_the_collector_runs_again_after_an_update_that_raised():
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_collector_paused_by_someone_else_stays_paused():
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
