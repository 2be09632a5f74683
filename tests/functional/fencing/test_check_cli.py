"""``instanceha fencing check`` against real emulators: powers nothing."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from harness import daemons, procs
from harness.bmc import IpmiSimBMC, SushyEmulator

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
