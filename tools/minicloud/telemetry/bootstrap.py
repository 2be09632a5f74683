#!/usr/bin/env python3
"""Steps of telemetry/up.sh that need Python (run with the telemetry venv's).

  bootstrap.py pipeline SHIPPED DST EVENTS_FILE
      DST = instanceha's shipped event pipeline, every sink also publishing to
      a JSON-lines file (the tests read what Ceilometer made of each event)
  bootstrap.py catalog RUN_DIR AODH_URL
      keystone service "aodh" (type alarming) and its endpoints (idempotent)
"""

import json
import os
import sys

import yaml


def pipeline(shipped, dst, events_file):
    with open(shipped) as f:
        data = yaml.safe_load(f)
    for sink in data["sinks"]:
        sink["publishers"].append(f"file://{events_file}?json")
    with open(dst, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)


def catalog(run_dir, url):
    with open(os.path.join(run_dir, "endpoints.json")) as f:
        ep = json.load(f)
    os.environ["OS_CLIENT_CONFIG_FILE"] = ep["clouds_yaml"]
    import openstack

    idn = openstack.connect(cloud=ep["cloud"]).identity
    svc = next((s for s in idn.services() if s.type == "alarming"), None) \
        or idn.create_service(name="aodh", type="alarming")
    for e in idn.endpoints(service_id=svc.id):
        if e.url != url:  # a stale one (another port): replace it
            idn.delete_endpoint(e)
    have = {e.interface for e in idn.endpoints(service_id=svc.id)}
    for iface in ("public", "internal", "admin"):
        if iface not in have:
            idn.create_endpoint(service_id=svc.id, interface=iface, url=url,
                                region_id=ep["region_name"])
    print("registered alarming", url)


def main(argv):
    {"pipeline": pipeline, "catalog": catalog}[argv[1]](*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
