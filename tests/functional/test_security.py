"""Only the controllers may fence: hostile writes to a secure coordination store.

A running cloud (the mini-cloud's Nova with two servers on compute1, an
ipmi_sim BMC per compute, an agent per compute watching its nova-compute, two
controllers) on the harness's ZooKeeper with TLS, digest authentication and
least-privilege ACLs on, as in production. Clients with compute2's agent
credentials, with none, with a wrong password, and without TLS on the plain
port try what a compromised hypervisor would, against compute1: ZooKeeper
refuses each one (the error is asserted). The two writes ZooKeeper cannot
refuse by design (an entry in a shared index, which any agent identity may
add: the membership index and the stall reports) are accepted, ignored by
the controllers and journaled as tampering. During the whole test nothing
is fenced (the BMCs got no power-off request and are on), nothing is forced
down and nothing is evacuated (Nova's records), and no host left HEALTHY.

Then the defence in depth of item 4: with the controllers' own (administrator)
credentials, compute1's member node and then its index entry are deleted
while its agent lives; the agent creates each again at once, counts it as
tampering, and no fence follows.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from harness import daemons
from harness.bmc import IpmiSimBMC
from kazoo import exceptions as kz_exc
from kazoo.client import KazooClient
from kazoo.security import OPEN_ACL_UNSAFE

from instanceha.coordination import credentials as cr
from instanceha.coordination.zk_codec import dumps

from .cloud import ensure_healthy, wait_for
from .compute.test_controller_recovery import agent as start_agent
from .compute.test_controller_recovery import controller as start_controller
from .conftest import CLI

pytestmark = pytest.mark.functional
HOSTS = ("compute1", "compute2", "compute3")
KEEP = {"instanceha:recovery": "evacuate"}


@pytest.fixture
def bmcs(tmp_path):
    made = {h: IpmiSimBMC(str(tmp_path), name=f"bmc-{h}", password=f"bmc-{h}-Secret").start()
            for h in HOSTS}
    yield made
    for b in made.values():
        b.stop()


@pytest.fixture
def cloud(healthy_cloud, bmcs, daemon_factory, tmp_path, servers, nova):
    """Two servers on compute1 (opted in), agents everywhere, two controllers."""
    inv = {"hosts": {h: b.entry(timeout=3) for h, b in bmcs.items()}}
    path = tmp_path / "fencing-inventory.yaml"
    path.write_text(json.dumps(inv))
    path.chmod(0o600)
    ids = [servers.boot(f"sec-{i}", "compute1", metadata=KEEP).id for i in range(2)]
    for sid in ids:
        servers.wait_status(sid, "ACTIVE")
    agents = {h: start_agent(daemon_factory, h) for h in HOSTS}
    ctl = start_controller(daemon_factory, healthy_cloud, str(path), 0)
    standby = daemon_factory("controller", "ctl-b", extra={
        "fencing": {"inventory_file": str(path)},
        "nova": dict(healthy_cloud.nova_options(), timeout=30),
        "controller": {"max_failed_percent": 100}})
    standby.wait_log(r"candidate for leadership")
    yield {"ids": ids, "agents": agents, "ctl": ctl, "standby": standby}
    ensure_healthy(healthy_cloud, nova)


def _client(zookeeper, auth=(), tls=True):
    kw = dict(use_ssl=True, ca=zookeeper.security.ca_file, verify_certs=True) if tls else {}
    c = KazooClient(hosts=zookeeper.hosts if tls else f"127.0.0.1:{zookeeper.port}",
                    auth_data=list(auth), timeout=2.0, **kw)
    c.start(timeout=20)
    return c


def _hostile_clients(zookeeper):
    own = cr.load(zookeeper.security.credentials("agent", "compute2"))
    wrong = [("digest", f"{cr.agent_user('compute1')}:not-the-password"),
             ("digest", f"{cr.CONTROLLER_USER}:not-the-password")]
    return {
        "compute2's agent": _client(zookeeper, [i.auth() for i in own.identities]),
        "no credentials": _client(zookeeper),
        "a wrong password": _client(zookeeper, wrong),
        "no TLS, no credentials": _client(zookeeper, tls=False),
    }


def _actions(root, live_entry):
    """(what, call(client)) for each hostile action against compute1."""
    slot = f"{root}/hosts/compute1"
    return [
        ("delete compute1's member node", lambda c: c.delete(f"{slot}/member")),
        ("delete compute1's index entry", lambda c: c.delete(f"{root}/live/{live_entry}")),
        ("create a member node for compute1",
         lambda c: c.create(f"{slot}/member-forged", b"{}", ephemeral=True)),
        ("join as a new host (create its slot)",
         lambda c: c.create(f"{root}/hosts/compute9", b"", acl=OPEN_ACL_UNSAFE)),
        ("write compute1's registry entry (a planned stop)",
         lambda c: c.set(slot, dumps({"planned_stop": {"reason": "forged"}}))),
        ("write control: pause",
         lambda c: c.set(f"{root}/control/operator", dumps({"paused": {"reason": "x"}}))),
        ("write control: power-off attestation of compute1",
         lambda c: c.set(f"{root}/control/operator",
                         dumps({"attest:compute1": {"reason": "x", "at": 1e12}}))),
        ("write control: guard override",
         lambda c: c.set(f"{root}/control/operator",
                         dumps({"guard_override_until": 1e12}))),
        ("write the controllers' control node",
         lambda c: c.set(f"{root}/control/controller", dumps({}))),
        ("create a control node", lambda c: c.create(f"{root}/control/evil", b"{}")),
        ("create an election candidate",
         lambda c: c.create(f"{root}/election/c-", b"evil", ephemeral=True, sequence=True)),
        ("overwrite the leader's status", lambda c: c.set(f"{root}/status", b"{}")),
        ("write the incident journal",
         lambda c: c.create(f"{root}/incidents/evil", b"{}")),
        ("write a guest failure of compute1",
         lambda c: c.create(f"{slot}/e-", dumps({"host": "compute1", "instance_id": "x",
                                                  "kind": "crashed"}), sequence=True)),
        ("rewrite the fence history of compute1",
         lambda c: c.create(f"{root}/history/compute1", dumps({"failures": []}))),
        ("read the operators' switches", lambda c: c.get(f"{root}/control/operator")),
        ("list the membership index", lambda c: c.get_children(f"{root}/live")),
        ("change an ACL", lambda c: c.set_acls(f"{root}/live", OPEN_ACL_UNSAFE)),
        ("delete the layout mark", lambda c: c.delete(f"{root}/layout")),
    ]


@pytest.mark.fault("Hostile writes to the coordination store (a compromised compute's "
                   "credentials, none, a wrong password, no TLS)", component="coordination",
                   expect="every one refused by ZooKeeper; forged shared-index entries "
                          "ignored and journaled; nothing fenced, forced down or evacuated")
def test_hostile_writes_are_refused_and_fence_nothing(cloud, zookeeper, root_path, bmcs, nova,
                                                      cli, tmp_path, fault):
    ctl = cloud["ctl"]
    admin = zookeeper.coordinator("controller", root_path=root_path)
    admin.start()
    try:
        live = admin.client.get_children(f"{root_path}/live")
        (entry,) = [n for n in live if n.startswith("compute1@")]
        refused = {}
        for who, client in _hostile_clients(zookeeper).items():
            try:
                for what, action in _actions(root_path, entry):
                    with pytest.raises(kz_exc.NoAuthError):
                        action(client)
                    refused[(who, what)] = True
            finally:
                client.stop()
                client.close()
        # what ZooKeeper cannot refuse: any agent identity may add an index entry
        c2 = _hostile_clients(zookeeper)
        agent2 = c2.pop("compute2's agent")
        for client in c2.values():
            for index in ("live", "stalls", "doorbell"):
                with pytest.raises(kz_exc.NoAuthError):
                    client.create(f"{root_path}/{index}/compute1@", b"", ephemeral=True,
                                  sequence=True)
            client.stop()
        forged = [agent2.create(f"{root_path}/live/compute1@", b"", ephemeral=True,
                                sequence=True),
                  agent2.create(f"{root_path}/stalls/compute1@",
                                dumps({"stalled_for": 100.0}), ephemeral=True, sequence=True)]
        ctl.wait_log(r"TAMPERING \(forged-membership\) about compute1", timeout=30)
        ctl.wait_log(r"TAMPERING \(forged-stall\) about compute1", timeout=30)
        # the forged stall would make compute1 FAILED at once if it were believed
        # (stalled for 100 s): watch a few ticks and the status
        wait_for(lambda: json.loads(cli("status", "--format", "json").stdout or "{}")
                 .get("hosts", {}).get("compute1", {}).get("phase") == "HEALTHY", 30,
                 "compute1 HEALTHY in the leader's status after the forgeries")
        # the audit names the forged entries (created with kazoo's default ACL: open)
        check = _coordination_check(zookeeper, root_path, tmp_path)
        assert check.returncode == 1, check.stdout + check.stderr
        assert ", 2 wider than the model" in check.stdout, check.stdout
        for path in forged:
            assert re.search(rf"^{re.escape(path)} +own +world:anyone has rwcda beyond the "
                             r"model \(-\)$", check.stdout, re.M), check.stdout
        agent2.stop()  # its session ends: the forged entries go with it
        agent2.close()
        check = _coordination_check(zookeeper, root_path, tmp_path)
        assert check.returncode == 0 and ", 0 wider than the model" in check.stdout, check.stdout
        incidents = cli("incidents", "--format", "json")
        assert incidents.returncode == 0, incidents.stderr
        assert "tampering" in incidents.stdout, incidents.stdout
    finally:
        admin.stop()
    _assert_nothing_done(cloud, bmcs, nova)
    fault.observed(f"{len(refused)} hostile actions refused by ZooKeeper (NoAuth), by "
                   f"{len({w for w, _ in refused})} kinds of client; 2 forged shared-index "
                   f"entries ({', '.join(p.rsplit('/', 2)[-2] for p in forged)}) ignored and "
                   "journaled; 0 power-off requests, 0 forced down, 0 evacuations")


@pytest.mark.fault("An administrator's delete of a live agent's member node, then of its "
                   "index entry", component="coordination",
                   expect="the agent creates each again at once (tampering counted); the "
                          "host stays HEALTHY; no fence")
def test_deleted_membership_is_recreated_and_fences_nothing(cloud, zookeeper, root_path,
                                                            bmcs, nova, fault):
    ctl, agent = cloud["ctl"], cloud["agents"]["compute1"]
    admin = zookeeper.coordinator("controller", root_path=root_path)
    admin.start()
    try:
        member = f"{root_path}/hosts/compute1/member"
        _, before = admin.client.get(member)
        admin.client.delete(member)
        agent.wait_log(r"TAMPERING: .*/hosts/compute1/member was deleted", timeout=10)
        _, after = wait_for(lambda: admin.client.exists(member) and admin.client.get(member),
                            10, "the member node created again")
        assert after.ephemeralOwner == before.ephemeralOwner  # same session, same incarnation
        (entry,) = [n for n in admin.client.get_children(f"{root_path}/live")
                    if n.startswith("compute1@")]
        admin.client.delete(f"{root_path}/live/{entry}")
        wait_for(lambda: [n for n in admin.client.get_children(f"{root_path}/live")
                          if n.startswith("compute1@")], 10, "a new index entry")
        ctl.wait_log(r"TAMPERING \(tampered-membership\) about compute1", timeout=30)
    finally:
        admin.stop()
    _assert_nothing_done(cloud, bmcs, nova)
    assert "phase=HEALTHY->" not in ctl.read_log()
    fault.observed("member node and index entry each re-created by the live agent "
                   "(same session); compute1 HEALTHY throughout in the leader's log; "
                   "0 power-off requests, 0 evacuations")


def _assert_nothing_done(cloud, bmcs, nova):
    for host, bmc in bmcs.items():
        assert bmc.power_off_requests() == 0, f"{host}'s BMC was asked to power off"
        assert bmc.powered_on(), f"{host} is off"
    for svc in nova.services():
        assert not svc.forced_down, f"{svc.host} was forced down"
    for sid in cloud["ids"]:
        assert nova.evacuations(sid) == [], f"{sid} was evacuated"
        assert nova.server(sid).host == "compute1"
    for d in (cloud["ctl"], cloud["standby"]):
        log = d.read_log()
        assert "->FAILED" not in log and "->SUSPECT" not in log, d.name


def _coordination_check(zookeeper, root_path, tmp_path):
    """``instanceha coordination check`` with the controllers' credentials."""
    conf = daemons.write_conf(str(tmp_path / "admin-cli.conf"), {
        "coordination": zookeeper.section("controller", root_path=root_path)})
    return subprocess.run([CLI, "--config-file", conf, "coordination", "check"],
                          capture_output=True, text=True, timeout=60)


def test_a_shared_ensemble_keeps_other_clients_long_sessions(tmp_path):
    """The settings the security guide gives for an ensemble shared with other
    services (tickTime 500, maxSessionTimeout raised): another service's client
    on the plain port asking for 30 s gets 30 s, while instanceha's
    authenticated TLS session gets its 2 s."""
    from harness.zookeeper import ZooKeeperServer

    zk = ZooKeeperServer(str(tmp_path / "shared-zk"), tick_ms=500, max_session_ms=40000,
                         min_session_ms=1000).start()
    other = KazooClient(hosts=f"127.0.0.1:{zk.port}", timeout=30.0)
    ours = zk.coordinator("controller", session_timeout=2.0, root_path="/instanceha")
    try:
        other.start(timeout=20)
        ours.start()
        assert ours.granted_session_timeout == 2.0
        sid = other.client_id[0]
        assert zk.connections()[sid]["to"] == "30000"
    finally:
        ours.stop()
        other.stop()
        other.close()
        zk.stop()
