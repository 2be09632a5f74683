"""``instanceha fencing check`` against real emulators: powers nothing."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from harness import daemons, procs
from harness.bmc import IpmiSimBMC, SushyEmulator
from harness.fenceagents import fence_ipmilan
from harness.snmppdu import ApcPDU

pytestmark = pytest.mark.functional
CLI = os.path.join(os.path.dirname(sys.executable), "instanceha")


def test_check_reports_each_bmc_and_powers_nothing(tmp_path):
    ipmi = IpmiSimBMC(str(tmp_path), name="ipmi", password="Ipmi-Secret-9").start()
    rf = SushyEmulator(str(tmp_path), systems=("compute2",), password="Rf-Secret-9").start()
    try:
        inv = {"hosts": {
            "compute1": ipmi.entry(timeout=3),
            "compute2": rf.entry("compute2", timeout=5),
            "compute3": dict(ipmi.entry(timeout=2), port=procs.free_port()),  # no BMC
            "compute4": dict(rf.entry("compute2", timeout=5), password="wrong"),
        }}
        path = tmp_path / "inv.yaml"
        path.write_text(yaml.safe_dump(inv))
        os.chmod(path, 0o600)
        conf = daemons.write_conf(str(tmp_path / "c.conf"), {"fencing": {
            "inventory_file": str(path), "deadline": 5}})
        r = subprocess.run([CLI, "--config-file", conf, "fencing", "check", "--format", "json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, r.stderr
        report = json.loads(r.stdout)
        assert report["ok"] is False
        rows = {x["host"]: x for x in report["hosts"]}
        assert rows["compute1"]["ok"] and rows["compute1"]["power_state"] == "on"
        assert rows["compute2"]["ok"] and rows["compute2"]["power_state"] == "on"
        assert rows["compute4"]["authenticated"] is False
        assert rows["compute3"]["reachable"] is False
        assert not rows["compute3"]["ok"] and "unreachable" in rows["compute3"]["error"]
        assert not rows["compute4"]["ok"] and "refused the credentials" in rows["compute4"]["error"]
        for secret in ("Ipmi-Secret-9", "Rf-Secret-9", "wrong"):
            assert secret not in r.stdout + r.stderr
        assert ipmi.powered_on() and rf.power_state("compute2") == "On"
        one = subprocess.run([CLI, "--config-file", conf, "fencing", "check", "compute1"],
                             capture_output=True, text=True, timeout=60)
        assert one.returncode == 0 and "compute1" in one.stdout and "ok" in one.stdout
        bad = subprocess.run([CLI, "--config-file", conf, "fencing", "check", "nohost"],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "nohost" in bad.stderr
    finally:
        ipmi.stop()
        rf.stop()


def test_check_runs_each_agent_of_each_level_and_names_the_one_at_fault(tmp_path):
    ipmi = IpmiSimBMC(str(tmp_path), name="ipmi", password="Ipmi-Secret-8").start()
    pdu = ApcPDU(str(tmp_path), outlets=4, community="Pdu-Community-8").start()
    try:
        wrong_pdu = dict(pdu.entry(2), timeout=3)
        wrong_pdu["options"] = dict(wrong_pdu["options"], community="Wrong-Community-8")
        inv = {"hosts": {"compute1": {"levels": [
            {"devices": [fence_ipmilan(ipmi.entry())]},
            {"devices": [pdu.entry(1), wrong_pdu]}]}}}
        path = tmp_path / "inv.yaml"
        path.write_text(yaml.safe_dump(inv))
        os.chmod(path, 0o600)
        conf = daemons.write_conf(str(tmp_path / "c.conf"), {"fencing": {
            "inventory_file": str(path), "deadline": 5}})
        r = subprocess.run([CLI, "--config-file", conf, "fencing", "check", "--format", "json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, r.stderr
        rows = json.loads(r.stdout)["hosts"]
        assert [(x["host"], x["level"], x["driver"], x["ok"]) for x in rows] == [
            ("compute1", 1, "fence_ipmilan", True), ("compute1", 2, "fence_apc_snmp", True),
            ("compute1", 2, "fence_apc_snmp", False)]
        assert rows[2]["address"] == f"127.0.0.1:{pdu.port} plug 2"
        assert "compute1" in rows[2]["error"] and "fence_apc_snmp" in rows[2]["error"]
        table = subprocess.run([CLI, "--config-file", conf, "fencing", "check"],
                               capture_output=True, text=True, timeout=120).stdout
        assert "compute1 (level 2, fence_apc_snmp): " in table
        for secret in ("Ipmi-Secret-8", "Pdu-Community-8", "Wrong-Community-8"):
            assert secret not in r.stdout + r.stderr + table
        assert ipmi.powered_on() and all(pdu.powered_on(n) for n in (1, 2))
        assert pdu.power_requests(1) == [] and pdu.power_requests(2) == []
    finally:
        ipmi.stop()
        pdu.stop()
