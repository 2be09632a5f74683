"""Evacuations in priority order, to planned targets, through the shared
throttle; servers without room held back (not sent, not left in ERROR) and
sent when room appears. Fakes for Nova and the model; no sleeps."""

import threading

import pytest

from instanceha.compute.evacuation import EvacuationResult, Outcome
from instanceha.compute.exceptions import NoCapacity
from instanceha.controller.capacity_dispatch import Dispatcher, Throttle
from instanceha.engine import capacity as cap
from instanceha.engine import marker as mk
from instanceha.engine.capacity_plan import FailurePlan, NoRoom, Placed
from instanceha.engine.model import Phase
from instanceha.notify import events
from tests.unit.controller import test_recovery_actuator as ra

# -- the throttle ------------------------------------------------------------------


class Waiters:
    """Each waiter a thread that takes a slot, records it, and holds it until released."""

    def __init__(self, throttle):
        self.throttle = throttle
        self.got = []
        self.release = {}
        self.threads = []

    def add(self, name, priority, target=None, group=None):
        release = self.release[name] = threading.Event()
        before = self.throttle.waiting()
        admitted = threading.Event()

        def run():
            with self.throttle.slot(priority, target, group):
                self.got.append(name)
                admitted.set()
                release.wait(10)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)
        # queued, or admitted at once: either way its place is taken before the next
        for _ in range(10000):
            if admitted.is_set() or self.throttle.waiting() > before:
                break
            threading.Event().wait(0.001)
        return admitted

    def done(self, name):
        self.release[name].set()

    def join(self):
        for e in self.release.values():
            e.set()
        for t in self.threads:
            t.join(10)


def wait(event):
    assert event.wait(10)


def test_waiting_evacuations_go_highest_priority_first():
    t = Throttle(overall=1, per_host=10)
    w = Waiters(t)
    wait(w.add("holder", 300))
    low, top, mid = w.add("low", 100), w.add("top", 500), w.add("mid", 300)
    w.done("holder")
    wait(top)
    w.done("top")
    wait(mid)
    w.done("mid")
    wait(low)
    w.join()
    assert w.got == ["holder", "top", "mid", "low"]
    assert t.peak == 1


def test_a_busy_target_does_not_hold_up_a_free_one():
    t = Throttle(overall=3, per_host=1)
    w = Waiters(t)
    wait(w.add("a1", 500, "A"))
    a2 = w.add("a2", 500, "A")  # A is busy: waits although first and highest
    b = w.add("b", 100, "B")
    wait(b)
    assert not a2.is_set() and t.by_target == {"A": 1, "B": 1}
    w.done("a1")
    wait(a2)
    w.join()
    assert t.peak_per_target == 1 and t.peak == 2


def test_members_of_one_hard_anti_affinity_group_move_one_at_a_time():
    t = Throttle(overall=10, per_host=10)
    w = Waiters(t)
    wait(w.add("m1", 300, "A", group="g"))
    m2 = w.add("m2", 300, "B", group="g")
    other = w.add("x", 100, "B")
    wait(other)
    assert not m2.is_set()
    w.done("m1")
    wait(m2)
    w.join()


@pytest.mark.parametrize("overall, per_host, n, targets", [
    (4, 16, 12, 3), (64, 2, 12, 3), (5, 2, 20, 4),
])
def test_peaks_stay_within_the_bounds(overall, per_host, n, targets):
    t = Throttle(overall, per_host)
    barrier = threading.Semaphore(0)
    done = []

    def one(i):
        with t.slot(i % 5 * 100, f"t{i % targets}"):
            barrier.acquire(timeout=10)
        done.append(i)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    for _ in range(n):
        barrier.release()
    for th in threads:
        th.join(10)
    assert len(done) == n
    assert t.peak <= overall and t.peak_per_target <= per_host
    assert t.in_flight == 0 and t.by_target == {}


# -- the recovery with the dispatcher -------------------------------------------------


class FakeMonitor:
    """The capacity monitor's surface the dispatcher uses."""

    known = True

    def __init__(self, model, room):
        self.reader = type("R", (), {"model": model})()
        self.room = room  # target -> how many servers it takes
        self.read_at = 1.0
        self.planned = []
        self.pending = []

    def server(self, sid):
        return self.reader.model.servers.get(sid)

    def plan(self, host, servers, avoid=None):
        self.planned.append([s.id for s in servers])
        room = dict(self.room)
        placed, unplaced = [], []
        for s in sorted(servers, key=lambda s: -s.priority):
            target = next((t for t, n in room.items() if n > 0
                           and t not in (avoid or {}).get(s.id, ())), None)
            if target is None:
                unplaced.append(NoRoom(s, "no room: needs 128 MEMORY_MB", {"MEMORY_MB": 128}))
            else:
                room[target] -= 1
                placed.append(Placed(s, target))
        return FailurePlan(frozenset({host}), tuple(placed), tuple(unplaced))

    def dispatched(self, server, target):
        self.pending.append((server.id, target))

    def landed(self, sid):
        pass


class TargetEvacuator(ra.FakeEvacuator):
    """The fake evacuator with per-server targets and the gate; ``refuse``:
    servers Nova answers 'No valid host' for."""

    refuse: set = set()

    def evacuate_host(self, host, servers, target_host=None, targets=None):
        out = []
        for s in servers:
            target = (targets or {}).get(s.id, target_host)
            with self.gate(s, target) if self.gate else _nothing():
                self.nova.evacuate(s.id, target)
                if s.id in self.refuse:
                    out.append(EvacuationResult(s.id, s.name, host, Outcome.NO_CAPACITY, 1,
                                                1.0, error=NoCapacity(
                                                    server=s.id, host=host, attempts=1,
                                                    reason="No valid host was found")))
                else:
                    out.append(EvacuationResult(s.id, s.name, host, Outcome.EVACUATED, 1, 3.0,
                                                dest_host=target or "compute9",
                                                status="ACTIVE"))
        return out

    gate = None


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def setup(room, servers, refuse=()):
    log = ra.Log()
    fenced = mk.encode(mk.MarkerState.FENCED, at=ra.NOW, token=40)
    act, nova, bus = ra.make(log, [ra.svc("compute1", fenced, forced=True)], servers)
    TargetEvacuator.refuse = set(refuse)
    act.ctx.evacuator_factory = lambda guarded: TargetEvacuator(log, guarded)
    model = cap.Model()
    for s in servers:
        prio = int(s.metadata.get("instanceha:priority", 300))
        model.set_server(cap.Server(s.id, s.name, "compute1", {"MEMORY_MB": 128},
                                    priority=prio))
    monitor = FakeMonitor(model, room)
    act.ctx.dispatcher = Dispatcher(monitor, Throttle(8, 4))
    return log, act, nova, bus, monitor


def vm(sid, priority, policy="evacuate"):
    s = ra.server(sid, policy)
    meta = dict(s.metadata, **{"instanceha:priority": str(priority)})
    import dataclasses

    return dataclasses.replace(s, metadata=meta)


FAILED = {"compute1": ra.view("compute1", Phase.FAILED)}


def evacuated(log):
    return [(c[1], c[2]) for c in log if c[0] == "evacuate"]


def test_the_highest_priorities_get_the_room_the_rest_wait_on_the_host():
    servers = [vm("lo1", 100), vm("hi1", 500), vm("lo2", 100), vm("hi2", 400),
               vm("nt", 300, "notify")]
    log, act, nova, bus, monitor = setup({"compute2": 1, "compute3": 1}, servers)
    ra.run(act, FAILED, [], ra.Verify(log))
    assert evacuated(log) == [("hi1", "compute2"), ("hi2", "compute3")]
    m = mk.decode(nova.svc["compute1"].disabled_reason)
    assert (m.state, m.waiting, m.token) == (mk.MarkerState.RECOVERING, 2, 40)
    deferred = [e.payload for e in bus.sent if e.event_type == events.EVACUATE_DEFERRED]
    assert sorted(p["instance_id"] for p in deferred) == ["lo1", "lo2"]
    assert all(p["priority"] == 100 and p["retrying"] and "no room" in p["reason"]
               for p in deferred)
    for p in deferred:
        events.evacuate_deferred(**{k: p[k] for k in ("host", "incident_id", "instance_id",
                                                      "project_id", "reason", "priority")})
    assert act.hosts["compute1"].next_try > act.clock.monotonic()  # after a back-off
    assert not [c for c in log if c[0] == "reset_state"]  # never sent: never in ERROR

    # no new read of the model: trying again costs nothing
    reads = len(nova.reads)
    act.clock.advance(120)
    ra.run(act, FAILED, [], ra.Verify(log))
    assert [r for r in nova.reads[reads:] if r != "services"] == []
    assert evacuated(log) == [("hi1", "compute2"), ("hi2", "compute3")]

    # room appears (the model was read again): the two are sent, highest first
    nova.servers = [s for s in nova.servers if s.id not in ("hi1", "hi2")]
    monitor.room, monitor.read_at = {"compute2": 5}, 2.0
    act.clock.advance(120)
    ra.run(act, FAILED, [], ra.Verify(log))
    assert evacuated(log)[2:] == [("lo1", "compute2"), ("lo2", "compute2")]
    m = mk.decode(nova.svc["compute1"].disabled_reason)
    assert m.state is mk.MarkerState.RECOVERED and m.waiting == 0
    types = [e.event_type for e in bus.sent]
    assert types.count(events.RECOVERY_START) == 1  # the resumption reports only its moves
    assert types.count(events.RECOVERY_REQUIRED) == 1
    assert types.count(events.EVACUATE_DEFERRED) == 2
    act.close()


def test_a_target_nova_refuses_is_tried_without_one_then_waits_not_in_error():
    servers = [vm("a", 300), vm("b", 300)]
    log, act, nova, bus, monitor = setup({"compute2": 5}, servers, refuse={"b"})
    ra.run(act, FAILED, [], ra.Verify(log))
    assert evacuated(log) == [("a", "compute2"), ("b", "compute2"), ("b", None)]
    assert ("reset_state", "b", "active") in log
    m = mk.decode(nova.svc["compute1"].disabled_reason)
    assert (m.state, m.waiting) == (mk.MarkerState.RECOVERING, 1)
    (deferred,) = [e.payload for e in bus.sent if e.event_type == events.EVACUATE_DEFERRED]
    assert deferred["instance_id"] == "b" and "Nova found no valid host" in deferred["reason"]
    act.close()


def test_without_a_model_evacuations_go_in_priority_order_untargeted():
    servers = [vm("lo", 100), vm("hi", 500), vm("mid", 300)]
    log, act, nova, bus, monitor = setup({}, servers)
    act.ctx.dispatcher = Dispatcher(None, Throttle(8, 4))
    ra.run(act, FAILED, [], ra.Verify(log))
    assert evacuated(log) == [("hi", None), ("mid", None), ("lo", None)]
    assert mk.decode(nova.svc["compute1"].disabled_reason).state is mk.MarkerState.RECOVERED
    act.close()


def test_group_violations_are_found_from_where_members_landed():
    model = cap.Model()
    model.set_groups([cap.Group("g", "web", cap.GroupPolicy.ANTI_AFFINITY)])
    model.set_server(cap.Server("m1", "m1", "c1", {}, group="g"))
    model.set_server(cap.Server("m2", "m2", "c2", {}, group="g"))
    d = Dispatcher(FakeMonitor(model, {}), Throttle())
    ok = EvacuationResult("m1", "m1", "c1", Outcome.EVACUATED, 1, 1.0, dest_host="c3")
    bad = EvacuationResult("m1", "m1", "c1", Outcome.EVACUATED, 1, 1.0, dest_host="c2")
    assert d.group_violations([ok]) == []
    (text,) = d.group_violations([bad])
    assert "m1 landed on c2 beside m2" in text


def test_a_spare_holding_a_member_is_not_allowed_for_its_peer():
    model = cap.Model()
    model.set_groups([cap.Group("g", "web", cap.GroupPolicy.ANTI_AFFINITY)])
    model.set_server(cap.Server("m1", "m1", "c1", {}, group="g"))
    model.set_server(cap.Server("m2", "m2", "spare1", {}, group="g"))
    model.set_server(cap.Server("x", "x", "c1", {}))
    allowed = Dispatcher(FakeMonitor(model, {}), Throttle()).allowed()
    m1, x = ra.server("m1", "evacuate"), ra.server("x", "evacuate")
    assert not allowed(m1, "spare1") and allowed(x, "spare1")
    assert allowed(m1, "spare2") and not allowed(ra.server("m1", "evacuate"), "spare2")


def test_without_a_model_yet_a_spare_is_checked_against_novas_groups():
    from instanceha.compute.capacity_reads import GroupRecord

    class Unknown(FakeMonitor):
        known = False

    d = Dispatcher(Unknown(cap.Model(), {}), Throttle())
    reads = []

    def groups():
        reads.append("groups")
        return [GroupRecord("g", "web", "anti-affinity", 1, ("m1", "m2"))]

    class Nova:
        def servers_on_host(self, host):
            reads.append(host)
            return [ra.server("m2", None, host=host)] if host == "spare1" else []

    d.groups_read = groups
    allowed = d.allowed(Nova())
    m1, x = ra.server("m1", "evacuate"), ra.server("x", "evacuate")
    assert not allowed(m1, "spare1") and allowed(x, "spare1") and allowed(m1, "spare2")
    assert reads == ["groups", "spare1", "spare2"]  # once each per recovery
