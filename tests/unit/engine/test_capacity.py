"""The failover planner and the coverage: pure tables, no Nova, no Placement."""

import random

import pytest

from instanceha.engine.capacity import (
    DISK_GB,
    MEMORY_MB,
    PCPU,
    VCPU,
    Group,
    GroupPolicy,
    Host,
    Inventory,
    Model,
    Role,
    Server,
    flavor_need,
)
from instanceha.engine.capacity_coverage import CoveragePolicy, CoverageTracker, Tolerance
from instanceha.engine.capacity_plan import Index, PlanPolicy, order, plan
from instanceha.engine.reserved import Match

SMALL = {VCPU: 1, MEMORY_MB: 1024}


def inv(vcpu=8, ram=8192, ratio=1.0, reserved=0, max_unit=None):
    return {VCPU: Inventory(vcpu, 0, ratio, max_unit),
            MEMORY_MB: Inventory(ram, reserved, 1.0, max_unit)}


def host(name, used_servers=0, zone="az1", role=Role.TARGET, domain=None, aggregates=(), **kw):
    used = {VCPU: used_servers, MEMORY_MB: 1024 * used_servers}
    return Host(name, inv(**kw), used, zone=zone, aggregates=frozenset(aggregates),
                domain=domain, role=role)


def server(sid, on, need=None, priority=300, group=None, zone=None, evacuate=True):
    return Server(sid, sid, on, dict(need or SMALL), evacuate=evacuate, priority=priority,
                  zone=zone, group=group)


def cloud(hosts, servers=(), groups=()):
    m = Model()
    for h in hosts:
        m.set_host(h)
    for s in servers:
        m.set_server(s)
    m.set_groups(groups)
    return m


def plan_of(m, failed, policy=None, **kw):
    return plan(m, Index.of(m), failed, policy or PlanPolicy(), **kw)


# -- what Placement counts ---------------------------------------------------------


@pytest.mark.parametrize("total, reserved, ratio, want", [
    (8, 0, 1.0, 8),
    (8, 2, 1.0, 6),
    (8, 0, 4.0, 32),
    (8, 2, 1.5, 9),  # (8 - 2) * 1.5
    (8, 10, 1.0, 0),  # more reserved than there is
])
def test_capacity_is_placements_formula(total, reserved, ratio, want):
    assert Inventory(total, reserved, ratio).capacity == want


@pytest.mark.parametrize("kw, want", [
    (dict(vcpus=2, ram=4096, disk=20), {VCPU: 2, MEMORY_MB: 4096, DISK_GB: 20}),
    (dict(vcpus=2, ram=4096, disk=20, volume_backed=True), {VCPU: 2, MEMORY_MB: 4096}),
    (dict(vcpus=2, ram=512, disk=10, ephemeral=5, swap=1024), {VCPU: 2, MEMORY_MB: 512,
                                                                DISK_GB: 16}),
    (dict(vcpus=4, ram=512, disk=0, extra_specs={"hw:cpu_policy": "dedicated"}),
     {PCPU: 4, MEMORY_MB: 512}),
    (dict(vcpus=1, ram=512, disk=1, extra_specs={"resources:CUSTOM_GPU": "1",
                                                 "resources:VCPU": "0"}),
     {MEMORY_MB: 512, DISK_GB: 1, "CUSTOM_GPU": 1}),
    (dict(vcpus=1, ram=512, disk=1, extra_specs={"resources:VCPU": "junk"}),
     {VCPU: 1, MEMORY_MB: 512, DISK_GB: 1}),
])
def test_flavor_need_follows_novas_request(kw, want):
    assert flavor_need(**kw) == want


# -- the plan --------------------------------------------------------------------


def test_servers_that_fit_are_placed_and_spread():
    """4 servers, 2 survivors: 2 on each (not all on the same one)."""
    m = cloud([host("c1", 4), host("c2"), host("c3")],
              [server(f"s{i}", "c1") for i in range(4)])
    p = plan_of(m, {"c1"})
    assert p.covered
    assert sorted(x.target for x in p.placed) == ["c2", "c2", "c3", "c3"]


@pytest.mark.parametrize("room, want_placed, want_short", [
    (4, ["p500", "p400", "p300", "p100"], []),
    (3, ["p500", "p400", "p300"], ["p100"]),
    (1, ["p500"], ["p400", "p300", "p100"]),
    (0, [], ["p500", "p400", "p300", "p100"]),
])
def test_when_room_is_short_the_highest_priorities_get_it(room, want_placed, want_short):
    ram = 1024 * room
    m = cloud([host("c1", 4), Host("c2", inv(ram=ram), {})],
              [server(f"p{p}", "c1", priority=p) for p in (100, 300, 500, 400)])
    p = plan_of(m, {"c1"})
    assert [x.server.id for x in p.placed] == want_placed
    assert [u.server.id for u in p.unplaced] == want_short
    for u in p.unplaced:
        assert u.reason == (f"no room: needs 1024 MEMORY_MB, 1 VCPU; the most free on a host "
                            f"of the cloud: {ram - 1024 * len(want_placed)} MEMORY_MB")
        assert u.lacking == {MEMORY_MB: 1024}
    assert p.shortfall() == ({MEMORY_MB: 1024 * len(want_short)} if want_short else {})


def test_dispatch_order_is_priority_then_size_then_name():
    big = {VCPU: 4, MEMORY_MB: 4096}
    servers = [server("b", "c1", priority=300), server("a", "c1", priority=300),
               server("z", "c1", need=big, priority=300), server("h", "c1", priority=400)]
    assert [s.id for s in order(servers)] == ["h", "z", "a", "b"]


@pytest.mark.parametrize("need, reason", [
    ({VCPU: 16, MEMORY_MB: 1024}, "the most free on a host of the cloud: 8 VCPU"),
    ({VCPU: 1, MEMORY_MB: 9000}, "8192 MEMORY_MB"),
])
def test_a_server_larger_than_any_host_says_which_class_lacks(need, reason):
    m = cloud([host("c1"), host("c2")], [server("big", "c1", need=need)])
    p = plan_of(m, {"c1"})
    assert not p.covered and reason in p.unplaced[0].reason


def test_max_unit_caps_what_one_server_may_take():
    m = cloud([host("c1"), Host("c2", inv(vcpu=32, max_unit=4), {})],
              [server("wide", "c1", need={VCPU: 6})])
    assert not plan_of(m, {"c1"}).covered


def test_fragmented_room_is_reported_as_such():
    """VCPU is free on one host, RAM on another: neither takes the server."""
    m = cloud([host("c1"),
               Host("c2", inv(), {VCPU: 8, MEMORY_MB: 0}),
               Host("c3", inv(), {VCPU: 0, MEMORY_MB: 8192})],
              [server("s", "c1", need={VCPU: 2, MEMORY_MB: 2048})])
    p = plan_of(m, {"c1"})
    assert "no single host of the cloud has" in p.unplaced[0].reason


@pytest.mark.parametrize("role, reason", [
    (Role.OUT, "takes servers"),
    (Role.SPARE, "takes servers"),  # the scheduler method never uses spares
])
def test_hosts_that_take_nothing_are_not_targets(role, reason):
    m = cloud([host("c1"), host("c2", role=role)], [server("s", "c1")])
    p = plan_of(m, {"c1"})
    assert not p.covered and reason in p.unplaced[0].reason


@pytest.mark.parametrize("server_zone, want", [
    ("az1", "c2"),  # pinned to its zone: stays there
    ("az2", "c3"),
    (None, "c2"),  # not pinned: anywhere (the most room first: c2 is emptier)
])
def test_availability_zone_is_kept(server_zone, want):
    m = cloud([host("c1"), host("c2", zone="az1"), host("c3", 1, zone="az2")],
              [server("s", "c1", zone=server_zone)])
    assert plan_of(m, {"c1"}).target_of("s") == want


def test_a_zone_without_usable_host_is_named():
    m = cloud([host("c1"), host("c2", zone="az2")], [server("s", "c1", zone="az1")])
    assert "no host of zone az1 takes servers" in plan_of(m, {"c1"}).unplaced[0].reason


def test_only_evacuable_servers_are_placed():
    m = cloud([host("c1"), Host("c2", inv(ram=1024), {})],
              [server("keep", "c1"), server("notify", "c1", evacuate=False)])
    assert [x.server.id for x in plan_of(m, {"c1"}).placed] == ["keep"]


def test_evacuations_in_flight_take_room_first():
    m = cloud([host("c1"), Host("c2", inv(ram=2048), {})], [server("s", "c1")])
    other = server("x", "c9", need={VCPU: 1, MEMORY_MB: 2048})
    assert not plan_of(m, {"c1"}, pending=[(other, "c2")]).covered
    assert plan_of(m, {"c1"}).covered


def test_a_target_nova_refused_is_avoided():
    m = cloud([host("c1"), host("c2"), host("c3")], [server("s", "c1")])
    first = plan_of(m, {"c1"}).target_of("s")
    again = plan_of(m, {"c1"}, avoid={"s": {first}}).target_of("s")
    assert again not in (None, first)


# -- server groups ----------------------------------------------------------------

ANTI = Group("g", "web", GroupPolicy.ANTI_AFFINITY)
SOFT_ANTI = Group("g", "web", GroupPolicy.SOFT_ANTI_AFFINITY)
AFF = Group("g", "db", GroupPolicy.AFFINITY)
SOFT_AFF = Group("g", "db", GroupPolicy.SOFT_AFFINITY)


@pytest.mark.parametrize("group, peers, want", [
    # hard anti-affinity: never beside a peer; nowhere left -> reported, not forced
    (ANTI, {"c2": 1}, "c3"),
    (ANTI, {"c2": 1, "c3": 1}, None),
    (Group("g", "web", GroupPolicy.ANTI_AFFINITY, max_per_host=2), {"c2": 1, "c3": 1},
     "c2"),
    # soft anti-affinity: a preference
    (SOFT_ANTI, {"c2": 1}, "c3"),
    (SOFT_ANTI, {"c2": 1, "c3": 1}, "c2"),
    # hard affinity: where the peers are, or nowhere
    (AFF, {"c3": 1}, "c3"),
    (SOFT_AFF, {"c3": 1}, "c3"),
])
def test_group_policies_are_kept(group, peers, want):
    servers = [server("m1", "c1", group="g")]
    servers += [server(f"peer-{h}-{i}", h, group="g", evacuate=False)
                for h, n in peers.items() for i in range(n)]
    m = cloud([host("c1"), host("c2"), host("c3")], servers, [group])
    p = plan_of(m, {"c1"})
    assert p.target_of("m1") == want
    if want is None:
        assert "anti-affinity group web (hard): every host of the cloud with room holds 1" \
            in p.unplaced[0].reason and p.unplaced[0].lacking == {}


def test_hard_affinity_without_room_beside_its_peers_is_reported():
    servers = [server("m1", "c1", group="g"), server("peer", "c3", group="g")]
    m = cloud([host("c1"), host("c2"), host("c3", 8)], servers, [AFF])
    p = plan_of(m, {"c1"})
    assert "its members are on c3" in p.unplaced[0].reason


def test_anti_affinity_members_of_hosts_failing_together_land_apart():
    servers = [server(f"m{i}", f"c{i}", group="g") for i in (1, 2)]
    m = cloud([host("c1"), host("c2"), host("c3"), host("c4")], servers, [ANTI])
    p = plan_of(m, {"c1", "c2"})
    assert sorted(x.target for x in p.placed) == ["c3", "c4"]


def test_hard_affinity_members_follow_the_first_one_placed():
    servers = [server(f"m{i}", "c1", group="g") for i in range(3)]
    m = cloud([host("c1"), host("c2"), host("c3")], servers, [AFF])
    assert len({x.target for x in plan_of(m, {"c1"}).placed}) == 1


# -- reserved spares ----------------------------------------------------------------

SPARES = PlanPolicy(spares=True, spare_match=Match.AVAILABILITY_ZONE)


def test_spares_first_the_closest_then_the_next_then_the_scheduler():
    spare = dict(role=Role.SPARE, ram=2048)
    hosts = [host("c1", aggregates={"rack1"}), host("t1"),
             host("sp-far", zone="az1", **spare),
             host("sp-near", zone="az1", aggregates={"rack1"}, **spare),
             host("sp-az2", zone="az2", **spare)]
    servers = [server(f"s{i}", "c1", priority=500 - i) for i in range(5)]
    p = plan_of(cloud(hosts, servers), {"c1"}, SPARES)
    assert [(x.server.id, x.target, x.spare) for x in p.placed] == [
        ("s0", "sp-near", True), ("s1", "sp-near", True), ("s2", "sp-far", True),
        ("s3", "sp-far", True), ("s4", "t1", False)]
    assert p.spares == ("sp-near", "sp-far")


def test_without_fallback_what_no_spare_takes_is_reported():
    hosts = [host("c1"), host("t1"), host("sp", role=Role.SPARE, ram=1024)]
    servers = [server("a", "c1", priority=400), server("b", "c1")]
    p = plan_of(cloud(hosts, servers), {"c1"},
                PlanPolicy(spares=True, fallback_to_scheduler=False))
    assert [x.target for x in p.placed] == ["sp"]
    assert "no reserved spare with room left" in p.unplaced[0].reason


def test_a_spare_never_breaks_a_group():
    """The spare already runs a member of the group: that server skips it."""
    hosts = [host("c1"), host("c2"), host("sp", role=Role.SPARE)]
    servers = [server("m1", "c1", group="g"), server("other", "c1"),
               server("peer", "sp", group="g", evacuate=False)]
    p = plan_of(cloud(hosts, servers, [ANTI]), {"c1"}, SPARES)
    assert p.target_of("other") == "sp" and p.target_of("m1") == "c2"
    servers.append(server("peer2", "c2", group="g", evacuate=False))
    p = plan_of(cloud(hosts, servers, [ANTI]), {"c1"}, SPARES)
    assert p.target_of("m1") is None and "anti-affinity" in p.unplaced[0].reason


# -- coverage ------------------------------------------------------------------------


def full_cloud(n_hosts=4, per_host=2, free_hosts=0):
    """``n_hosts`` hosts of 8 servers' room, ``per_host`` servers each."""
    hosts = [host(f"c{i}", per_host, domain=f"rack{i % 2}") for i in range(n_hosts)]
    hosts += [host(f"e{i}", 0, domain="spare-rack") for i in range(free_hosts)]
    servers = [server(f"c{i}-{j}", f"c{i}") for i in range(n_hosts) for j in range(per_host)]
    return cloud(hosts, servers)


@pytest.mark.parametrize("per_host, k, tolerance, covered", [
    (2, 1, Tolerance.HOSTS, True),
    (6, 1, Tolerance.HOSTS, True),  # 6 servers onto 3 hosts with 2 free each
    (7, 1, Tolerance.HOSTS, False),
    (4, 2, Tolerance.HOSTS, True),  # two hosts' 8 servers onto 2 hosts with 4 free each
    (5, 2, Tolerance.HOSTS, False),
    (2, 1, Tolerance.DOMAIN, True),  # a rack of 2 hosts: 4 servers onto 2 hosts
    (5, 1, Tolerance.DOMAIN, False),
])
def test_tolerance(per_host, k, tolerance, covered):
    m = full_cloud(per_host=per_host)
    cov = CoverageTracker(m, CoveragePolicy(tolerance=tolerance, hosts=k)).refresh()
    assert cov.covered is covered
    if not covered:
        assert cov.shortfall()[MEMORY_MB] > 0


def test_the_worst_k_are_those_losing_the_most():
    """A host's loss: what its evacuable servers need plus the room it takes
    away; servers that stay (notify, ignore) cost nothing."""
    hosts = [host("huge", 12, vcpu=16, ram=16384), host("a", 4), host("b", 4),
             host("c", 0, vcpu=6, ram=6144)]
    servers = [server(f"{h.name}-{j}", h.name, evacuate=h.name != "b") for h in hosts
               for j in range(h.used[VCPU])]
    tracker = CoverageTracker(cloud(hosts, servers), CoveragePolicy(hosts=2))
    # losses: huge 12+4=16, a 4+4=8, b 0+4=4, c 0+6=6
    assert tracker.worst_hosts(1) == {"huge"}
    assert tracker.worst_hosts(2) == {"huge", "a"}
    assert tracker.worst_hosts(3) == {"huge", "a", "c"}
    cov = tracker.refresh()
    assert cov.worst.failed == {"huge", "a"} and not cov.covered
    assert "2 hosts a, huge" in cov.counted()


def test_uncovered_hosts_and_domains_are_listed():
    m = full_cloud(per_host=5)
    cov = CoverageTracker(m, CoveragePolicy(tolerance=Tolerance.DOMAIN)).refresh()
    assert cov.uncovered_domains() == ["rack0", "rack1"]
    assert cov.uncovered_hosts() == []
    assert set(cov.counted()) == {"domain rack0", "domain rack1"}


def _summary(cov):
    return ({h: (p.covered, len(p.placed)) for h, p in cov.hosts.items()},
            {d: (p.covered, len(p.placed)) for d, p in cov.domains.items()},
            None if cov.worst is None else cov.worst.covered)


@pytest.mark.parametrize("seed", range(8))
def test_incremental_refresh_agrees_with_a_full_one(seed):
    """Random boots, deletes, host changes and group changes: after each, the
    tracker kept up to date says what a fresh one says about coverage."""
    rnd = random.Random(seed)
    m = Model()
    names = [f"c{i}" for i in range(8)]
    used = {n: 0 for n in names}
    for i, n in enumerate(names):
        m.set_host(Host(n, inv(), {}, zone="az1", domain=f"r{i % 3}"))
    tracker = CoverageTracker(m, CoveragePolicy(hosts=2))
    tracker.refresh()
    ids = []
    for step in range(60):
        what = rnd.random()
        if what < 0.5 or not ids:
            n = rnd.choice(names)
            sid = f"s{step}"
            grp = rnd.choice([None, None, "g"])
            m.set_server(server(sid, n, group=grp))
            ids.append(sid)
            used[n] += 1
        elif what < 0.8:
            sid = ids.pop(rnd.randrange(len(ids)))
            used[m.servers[sid].host] -= 1
            m.remove_server(sid)
        elif what < 0.9:
            m.set_groups([rnd.choice([ANTI, SOFT_ANTI, AFF])])
        n = rnd.choice(names)
        role = Role.OUT if rnd.random() < 0.1 else Role.TARGET
        for h in names:
            old = m.hosts[h]
            m.set_host(Host(h, old.inventory, {VCPU: used[h], MEMORY_MB: 1024 * used[h]},
                            zone="az1", domain=old.domain, role=role if h == n else old.role))
        incremental = tracker.refresh()
        m2 = Model()
        for h in m.hosts.values():
            m2.set_host(h)
        for s in m.servers.values():
            m2.set_server(s)
        m2.set_groups(m.groups.values())
        fresh = CoverageTracker(m2, tracker.policy).refresh()
        assert _coverage_answer(incremental) == _coverage_answer(fresh), step


def _coverage_answer(cov):
    return ({h: p.covered for h, p in cov.hosts.items()},
            {d: p.covered for d, p in cov.domains.items()}, cov.covered)


@pytest.mark.parametrize("most_room", [False, True])
def test_four_servers_two_survivors_two_each(most_room):
    m = cloud([host("c1", 4), host("c2", 1), host("c3")],
              [server(f"s{i}", "c1") for i in range(4)])
    p = plan(m, Index.of(m), {"c1"}, PlanPolicy(), most_room=most_room)
    assert sorted(x.target for x in p.placed) == ["c2", "c2", "c3", "c3"]


def test_a_recovery_plan_counts_the_others_in_flight_and_spreads():
    """Hosts failing one after the other: each plan sees the previous ones'
    evacuations in flight and goes where the most room is left."""
    hosts = [host(f"t{i}") for i in range(6)] + [host(f"f{i}", 4) for i in range(3)]
    servers = [server(f"f{i}-{j}", f"f{i}") for i in range(3) for j in range(4)]
    m = cloud(hosts, servers)
    tracker = CoverageTracker(m)
    tracker.refresh()
    pending = []
    for i in range(3):
        p = tracker.plan_failure({f"f{i}"}, [s for s in servers if s.host == f"f{i}"],
                                 pending=pending)
        pending += [(x.server, x.target) for x in p.placed]
    per_target = {}
    for _, t in pending:
        per_target[t] = per_target.get(t, 0) + 1
    assert set(per_target) == {f"t{i}" for i in range(6)} and max(per_target.values()) == 2


def test_the_index_order_the_fast_path_reads_follows_every_change():
    """The placer reads a pool's names in score order from a list kept until
    the pool changes: a host that filled up or left is seen at once."""
    m = cloud([host("c1", 6), host("c2", 1), host("c3", 3), host("f", 2)],
              [server("a", "f"), server("b", "f")])
    tracker = CoverageTracker(m)
    tracker.refresh()
    pool = tracker.index.pool_of("az1")
    assert pool.names_in_order() == ["c2", "f", "c3", "c1"]
    assert [x.target for x in tracker.coverage().hosts["f"].placed] == ["c2", "c3"]
    m.set_host(host("c2", 8))  # c2 full: the plan that used it is made again
    tracker.refresh()
    assert pool.names_in_order() == ["f", "c3", "c1", "c2"]
    assert [x.target for x in tracker.coverage().hosts["f"].placed] == ["c3", "c1"]
    m.remove_host("c3")
    tracker.refresh()
    assert pool.names_in_order() == ["f", "c1", "c2"]
    assert [x.target for x in tracker.coverage().hosts["f"].placed] == ["c1", "c1"]  # c2 full


def test_a_plan_names_the_server_groups_it_touches():
    m = cloud([host("c1"), host("c2"), host("c3"), host("s", role=Role.SPARE)],
              [server("a", "c1", group="g1"), server("b", "c1"), server("c", "c2", group="g2")],
              [Group("g1", "g1", GroupPolicy.ANTI_AFFINITY), Group("g2", "g2",
                                                                    GroupPolicy.AFFINITY)])
    assert plan_of(m, {"c1"}).groups == {"g1"}
    assert plan_of(m, {"c1", "c2"}).groups == {"g1", "g2"}
    assert plan_of(m, {"c3"}).groups == frozenset()
    spares = PlanPolicy(spares=True, spare_match=Match.NONE)
    assert plan_of(m, {"c1"}, spares).groups == {"g1"}
