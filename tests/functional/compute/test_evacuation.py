"""A compute dies on the real mini-cloud; its servers are moved and verified.

The victim's nova-compute is SIGKILLed (the host "loses power"), the adapter
forces it down and disables it with instanceha's marker, the per-instance
policy picks the servers to move, and the Evacuator moves them. Then the host
comes back and is re-enabled.
"""

import datetime

import pytest

from instanceha.compute import exceptions as exc
from instanceha.compute.evacuation import EvacuationSettings, Evacuator, Outcome
from instanceha.engine import marker
from instanceha.engine.instance_policy import Recovery, decide

from .conftest import wait_for

pytestmark = pytest.mark.functional
NOW = datetime.datetime(2026, 11, 21, 17, 0, tzinfo=datetime.timezone.utc)
KEEP = {"instanceha:recovery": "evacuate"}
FAST = EvacuationSettings(concurrency=4, attempts=2, timeout=120.0, poll_interval=0.5)


def fence(cloud, nova, host, token):
    """What the controller does after the BMC confirmed power-off."""
    cloud.kill_compute(host)
    svc = nova.force_down(host, marker.encode(marker.MarkerState.FENCED, at=NOW, token=token))
    assert (svc.forced_down, svc.status, svc.state) == (True, "disabled", "down")


def plan(nova, host, default=Recovery.IGNORE):
    on_host = nova.servers_on_host(host)
    facts = nova.instance_facts(on_host, host)
    return {s.id: (s, decide(facts[s.id], default)) for s in on_host}


def test_fail_host_evacuate_mix_and_reenable(healthy_cloud, nova, admin, servers):
    cloud = healthy_cloud
    victim = cloud.hosts[0]
    boot = {
        "active": servers.boot("ev-active", victim, KEEP),
        "shutoff": servers.boot("ev-shutoff", victim, KEEP),
        "error": servers.boot("ev-error", victim, KEEP),
        "locked": servers.boot("ev-locked", victim, KEEP),
        "stuck": servers.boot("ev-stuck", victim, {"HA_Enabled": "True"}),
        "notify": servers.boot("ev-notify", victim, {"instanceha:recovery": "notify"}),
        "plain": servers.boot("ev-plain", victim),
    }
    ids = {k: s.id for k, s in boot.items()}
    for sid in ids.values():
        servers.wait_status(sid, "ACTIVE")
    admin.compute.stop_server(ids["shutoff"])
    servers.wait_status(ids["shutoff"], "SHUTOFF")
    admin.compute.lock_server(ids["locked"])
    nova.reset_state(ids["error"], "error")
    servers.wait_status(ids["error"], "ERROR")

    fence(cloud, nova, victim, token=11)
    # a reboot cast to the dead host leaves the server stuck in task 'rebooting'
    admin.compute.reboot_server(ids["stuck"], "SOFT")
    assert nova.server(ids["stuck"]).task_state == "rebooting"

    decisions = plan(nova, victim)
    assert {d.recovery for sid, (_, d) in decisions.items() if sid in (
        ids["active"], ids["shutoff"], ids["error"], ids["locked"], ids["stuck"])} == {
        Recovery.EVACUATE}
    assert decisions[ids["notify"]][1].recovery is Recovery.NOTIFY
    assert decisions[ids["plain"]][1].recovery is Recovery.IGNORE
    to_move = [s for s, d in decisions.values() if d.recovery is Recovery.EVACUATE]

    reported = []
    results = Evacuator(nova, FAST, on_result=reported.append).evacuate_host(victim, to_move)
    by_id = {r.server_id: r for r in results}
    assert len(reported) == len(results) == 5
    assert all(r.outcome is Outcome.EVACUATED for r in results), [
        (r.name, r.outcome, str(r.error)) for r in results]

    want = {"active": "ACTIVE", "shutoff": "SHUTOFF", "error": "ACTIVE", "locked": "ACTIVE",
            "stuck": "ACTIVE"}
    for key, status in want.items():
        r = by_id[ids[key]]
        s = nova.server(ids[key])
        assert (s.status, s.task_state) == (status, None), key
        assert s.host != victim and s.host in cloud.hosts and s.host == r.dest_host, key
        assert r.migration_status == "done", key
        migs = nova.evacuations(ids[key])
        assert migs[0].id == r.migration_id and migs[0].source_compute == victim, key
        assert migs[0].dest_compute == s.host, key
    assert nova.server(ids["locked"]).locked
    for key in ("notify", "plain"):  # not moved
        assert nova.server(ids[key]).host == victim

    # running it again (a restarted controller) verifies and does not evacuate twice
    again = Evacuator(nova, FAST).evacuate_host(victim, [nova.server(ids["active"])])
    assert again[0].ok and again[0].migration_id == by_id[ids["active"]].migration_id
    assert len(nova.evacuations(ids["active"])) == 1

    # the host is repaired: nova-compute starts again with the same identity
    svc = nova.service(victim)
    assert svc.marker.state is marker.MarkerState.FENCED and svc.marker.token == 11
    before = svc.updated_at
    cloud.start_compute(victim)
    wait_for(lambda: nova.service(victim).updated_at != before, 90,
             f"{victim} to report again")
    # it cleans up after the evacuations: 'done' -> 'completed'
    wait_for(lambda: all(nova.evacuations(ids[k])[0].status == "completed" for k in want), 90,
             "evacuation migrations to be completed")
    svc = nova.enable(victim)
    assert (svc.status, svc.forced_down, svc.marker) == ("enabled", False, None)
    wait_for(lambda: nova.service(victim).up, 60, f"{victim} up")


def test_no_capacity_is_reported_and_the_rest_continue(healthy_cloud, nova, admin, servers):
    cloud = healthy_cloud
    victim, others = cloud.hosts[1], [h for h in cloud.hosts if h != cloud.hosts[1]]
    # a server so big that only an empty host takes it; fill every other host
    big = servers.flavor("ih.test.big", ram=600000)
    fillers = [servers.boot(f"filler-{h}", h, flavor=big) for h in others]
    big_one = servers.boot("nc-big", victim, KEEP, flavor=big)
    small = servers.boot("nc-small", victim, KEEP)
    for s in fillers + [big_one, small]:
        servers.wait_status(s.id, "ACTIVE")

    fence(cloud, nova, victim, token=12)
    to_move = [s for s, d in plan(nova, victim).values() if d.recovery is Recovery.EVACUATE]
    assert {s.id for s in to_move} == {big_one.id, small.id}
    results = {r.server_id: r for r in Evacuator(nova, FAST).evacuate_host(victim, to_move)}

    r = results[big_one.id]
    assert r.outcome is Outcome.NO_CAPACITY and r.attempts == FAST.attempts
    assert isinstance(r.error, exc.NoCapacity) and "No valid host" in str(r.error)
    s = nova.server(big_one.id)
    assert (s.host, s.status) == (victim, "ERROR")
    assert nova.evacuations(big_one.id)[0].status == "error"

    r = results[small.id]
    assert r.outcome is Outcome.EVACUATED and r.dest_host in others
    assert nova.server(small.id).status == "ACTIVE"
