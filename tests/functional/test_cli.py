"""The operator CLI against a real ZooKeeper and real daemons."""

import json
import os
import subprocess
import sys

import pytest
from harness import daemons

pytestmark = pytest.mark.functional
CLI = os.path.join(os.path.dirname(sys.executable), "instanceha")


def test_status_pause_and_forget(daemon_factory, cli):
    agents = {n: daemon_factory("agent", n) for n in ("compute1", "compute2")}
    ctl = daemon_factory("controller", "ctl-a")
    for n in agents:
        ctl.wait_log(rf"host={n} phase=\w+->HEALTHY")

    def status():
        r = cli("status", "--format", "json")
        return r, (json.loads(r.stdout) if r.stdout else None)

    daemons.wait_until(lambda: (s := status()[1]) and len(s["hosts"]) == 2
                       and all(h["phase"] == "HEALTHY" for h in s["hosts"].values()),
                       30, "status to show both hosts HEALTHY")
    r, doc = status()
    assert r.returncode == 0 and doc["leader"] == "ctl-a" and doc["token"]
    table = cli("status")
    assert table.returncode == 0 and "compute1" in table.stdout and "HEALTHY" in table.stdout

    # paused: a dead host is decided FAILED but never handed over
    assert cli("pause", "--reason", "test window").returncode == 0
    agents["compute2"].kill()
    ctl.wait_log(r"host=compute2 phase=\w+->FAILED")
    ctl.wait_log(r"paused by an operator .*test window.*compute2")
    assert "action=none" not in ctl.read_log()
    r, doc = status()
    assert r.returncode == 1 and doc["hosts"]["compute2"]["phase"] == "FAILED"
    # who paused: the identity ZooKeeper let write it, beside the login the CLI claims
    assert doc["control"]["paused"]["identity"] == "instanceha-operator"
    assert "PAUSED by instanceha-operator (login " in cli("status").stdout
    assert cli("resume").returncode == 0
    ctl.wait_log(r"host=compute2 phase=FAILED action=none")

    # an attestation is refused for a live host, stored (audited) for a dead one
    r = cli("host", "confirm-down", "compute1", "--reason", "looks off")
    assert r.returncode == 2 and "live agent" in r.stderr
    r = cli("host", "confirm-down", "compute2", "--reason", "PDU switched off")
    assert r.returncode == 0, r.stderr
    record = daemons.wait_until(lambda: json.loads(
        cli("status", "--format", "json").stdout)["control"].get("attest:compute2"), 20,
        "the attestation in the leader's status")
    assert record["reason"] == "PDU switched off" and record["by"] and record["at"] > 0
    assert record["identity"] == "instanceha-operator"

    # a live host cannot be forgotten; a dead one can, and leaves the view
    assert cli("host", "forget", "compute1").returncode == 2
    assert cli("host", "forget", "compute2").returncode == 0
    ctl.wait_log(r"host=compute2 phase=FAILED->FORGOTTEN")


def test_status_without_a_leader_is_an_error(cli, zookeeper, root_path):
    r = cli("status")
    assert r.returncode == 2 and "no controller has initialised" in r.stderr
    zookeeper.provision(root_path, [])  # a controller made the tree, none leads now
    r = cli("status")
    assert r.returncode == 2 and "no leader has published" in r.stderr


def test_unreachable_coordinator_is_an_error(tmp_path, zookeeper):
    from harness import procs
    conf = daemons.write_conf(str(tmp_path / "c.conf"), {"coordination": dict(
        zookeeper.section("operator"),
        backend_url=f"zookeeper://127.0.0.1:{procs.free_port()}", connect_timeout=1)})
    r = subprocess.run([CLI, "--config-file", conf, "status"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "unreachable" in r.stderr and "retry later" in r.stderr


def test_version_and_config_check(tmp_path):
    r = subprocess.run([CLI, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("instanceha ")
    bad = tmp_path / "bad.conf"
    bad.write_text("[detection]\nheartbeat_stale_after = 0.3\n")
    r = subprocess.run([CLI, "--config-file", str(bad), "config", "check"], capture_output=True,
                       text=True)
    assert r.returncode == 2
    assert "[detection] heartbeat_stale_after" in r.stderr and str(bad) in r.stderr


def test_config_check_refuses_a_hung_after_a_cut_off_leader_reaches_first(tmp_path):
    bad = tmp_path / "slow-session.conf"
    bad.write_text("[coordination]\nsession_timeout = 3\n")
    r = subprocess.run([CLI, "--config-file", str(bad), "config", "check"],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stdout
    assert "[detection] hung_after" in r.stderr and "[coordination] session_timeout" in r.stderr
    assert str(bad) in r.stderr
    bad.write_text("[coordination]\nsession_timeout = 3\ninsecure = true\ntls = false\n"
                   "[detection]\nhung_after = 2.6\n")
    r = subprocess.run([CLI, "--config-file", str(bad), "config", "check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "config check: WARNING: INSECURE coordination" in r.stderr


def test_config_check_checks_what_a_daemon_checks_at_start(tmp_path, zookeeper):
    """Each failure names the option and the file; nothing is started."""
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts: [compute1: {driver: ipmi\n")
    inventory.chmod(0o600)
    conf = tmp_path / "controller.conf"
    daemons.write_conf(str(conf), {"coordination": zookeeper.section("controller"),
                                   "fencing": {"inventory_file": str(inventory)}})
    r = subprocess.run([CLI, "--config-file", str(conf), "config", "check"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "ok      coordination security (as controller)" in r.stdout
    assert "[fencing] inventory_file" in r.stderr and "not valid YAML" in r.stderr
    assert "[nova] auth_type" in r.stderr
    open_conf = tmp_path / "open.conf"
    open_conf.write_text("[coordination]\ntls_ca_file = /nonexistent/ca.pem\n")
    r = subprocess.run([CLI, "--config-file", str(open_conf), "config", "check", "--role",
                        "agent"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "[coordination] credentials_file" in r.stderr and "not set" in r.stderr
    creds = tmp_path / "agent.yaml"
    creds.write_text(open(zookeeper.security.credentials("agent", "compute1")).read())
    creds.chmod(0o644)
    open_conf.write_text(f"[DEFAULT]\nhost = compute1\n[coordination]\n"
                         f"credentials_file = {creds}\ntls_ca_file = "
                         f"{zookeeper.security.ca_file}\n")
    r = subprocess.run([CLI, "--config-file", str(open_conf), "config", "check"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "others may access it (mode 0644)" in r.stderr
    assert "password" not in r.stderr.lower().replace("holds passwords", "")
    creds.chmod(0o600)
    r = subprocess.run([CLI, "--config-file", str(open_conf), "config", "check"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "config check: OK as agent" in r.stdout, r.stderr


def test_host_provision_makes_slots_with_the_controllers_credentials(tmp_path, zookeeper,
                                                                     root_path):
    zookeeper.provision(root_path, [])
    conf = daemons.write_conf(str(tmp_path / "ctl.conf"), {"coordination": dict(
        zookeeper.section("controller"), root_path=root_path)})

    def provision(*hosts):
        return subprocess.run([CLI, "--config-file", conf, "host", "provision", *hosts],
                              capture_output=True, text=True, timeout=60)

    r = provision("compute7")
    assert (r.returncode, r.stdout) == (0, "compute7: provisioned\n"), r.stderr
    r = provision("compute7", "compute8")
    assert (r.returncode, r.stdout) == (0, "compute7: already provisioned\n"
                                            "compute8: provisioned\n"), r.stderr
    r = provision("compute9", "not/a-host")  # one bad name: none made
    assert r.returncode == 2 and "'not/a-host'" in r.stderr and "nothing provisioned" in r.stderr
    assert r.stdout == ""
    r = provision("compute9")
    assert (r.returncode, r.stdout) == (0, "compute9: provisioned\n"), r.stderr
