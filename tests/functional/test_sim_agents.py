"""The benchmarks' simulated agents join as real agents do (layout 2).

``benchmarks/sim_agents.py`` stands in for thousands of ``instanceha-agent``
processes in the detection benchmark: if it joined differently from the
agent (another node, another ACL, no authentication), the benchmark would
measure something the daemons never do. Here, on the harness's ZooKeeper
(TLS, digest authentication, ACLs), a few of them join: the controllers'
view verifies every one of them (nothing reported as forged or tampered),
``coordination check`` finds no node wider than the model, and when they
stop (their sessions closed) they leave the view.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from harness import daemons

from instanceha.coordination import zk_audit

pytestmark = pytest.mark.functional
SIM = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "sim_agents.py")
N = 12


@pytest.mark.parametrize("secure", [True, False], ids=["secure", "insecure"])
def test_simulated_agents_join_as_agents_do(zookeeper, root_path, tmp_path, secure):
    from harness.zookeeper import make_coordinator

    if secure:
        ctl = zookeeper.coordinator("controller", root_path=root_path)
        url, mode = zookeeper.url, ["--security-dir", zookeeper.security.dir]
    else:
        ctl = make_coordinator(zookeeper.plain_url, None, "controller", root_path=root_path)
        url, mode = zookeeper.plain_url, ["--insecure"]
    ctl.start()  # makes the tree, as the first controller does
    err = open(tmp_path / "sim.err", "w")
    sim = subprocess.Popen([sys.executable, SIM, url, root_path, "sim-", str(N), "--provision",
                            "--write-slot"] + mode, stdout=subprocess.PIPE, stderr=err,
                           text=True)
    try:
        assert sim.stdout.readline().startswith(f"ready {N}"), (tmp_path / "sim.err").read_text()
        names = {f"sim-{i:05d}" for i in range(N)}
        snap = daemons.wait_until(lambda: (s := ctl.snapshot()) and set(s.members) == names
                                  and s, 20, "every simulated agent a member")
        assert set(snap.provisioned) >= names and set(snap.hosts) >= names
        assert all(m.capabilities.get("session_timeout") == 2.0 for m in snap.members.values())
        assert snap.alerts == ()  # every entry verified against its host's own slot
        if secure:
            findings, walked = zk_audit.audit_tree(ctl)
            assert findings == [] and walked > 3 * N
            # the member node is the agent's own: its identity, the controllers, operators
            acl, _ = ctl.client.get_acls(ctl.session.path("hosts", "sim-00001", "member"))
            assert acl == ctl.acls.acl("own", "sim-00001")
        sim.terminate()
        assert sim.wait(30) == 0
        assert "rejoins=0" in sim.stdout.read()
        daemons.wait_until(lambda: not ctl.snapshot().members, 20, "the members gone")
        assert ctl.snapshot().alerts == ()  # sessions that end are not tampering
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
        ctl.stop()
