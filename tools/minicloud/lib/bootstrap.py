#!/usr/bin/env python3
"""Bootstrap steps of up.sh that talk to the APIs (run with the venv's python).

  bootstrap.py RUN_DIR catalog        keystone services + endpoints, 'service' role
  bootstrap.py RUN_DIR image          image 'tiny' (1 MiB raw) and flavor 'm1.tiny'
  bootstrap.py RUN_DIR wait-computes  until every compute of endpoints.json and
                                     cinder-volume are 'up'

Idempotent. Reads RUN_DIR/endpoints.json and RUN_DIR/clouds.yaml.
"""

import json
import os
import sys
import time


def connect(ep):
    os.environ["OS_CLIENT_CONFIG_FILE"] = ep["clouds_yaml"]
    import openstack

    return openstack.connect(cloud=ep["cloud"])


def catalog(ep):
    conn = connect(ep)
    idn = conn.identity
    existing = {s.type: s for s in idn.services()}
    for name, stype, url in (
        ("nova", "compute", ep["nova"]),
        ("placement", "placement", ep["placement"]),
        ("glance", "image", ep["glance"]),
        ("neutron", "network", ep["neutron"]),
        ("cinderv3", "volumev3", ep["cinder"] + "/%(project_id)s"),
    ):
        svc = existing.get(stype) or idn.create_service(name=name, type=stype)
        have = {e.interface for e in idn.endpoints(service_id=svc.id)}
        for iface in ("public", "internal", "admin"):
            if iface not in have:
                idn.create_endpoint(service_id=svc.id, interface=iface, url=url,
                                    region_id=ep["region_name"])
        print("registered", stype, url)
    # nova sends an X-Service-Token to neutron/glance: give admin the
    # 'service' role so it is a valid service token (pitfall 4)
    role = idn.find_role("service") or idn.create_role(name="service")
    user = idn.find_user("admin", domain_id="default")
    project = idn.find_project("admin", domain_id="default")
    idn.assign_project_role_to_user(project, user, role)


def image(ep):
    conn = connect(ep)
    if not conn.compute.find_flavor(ep["flavor"]):
        conn.compute.create_flavor(name=ep["flavor"], ram=128, vcpus=1, disk=1)
    if not conn.image.find_image(ep["image"]):
        path = os.path.join(ep["run_dir"], "glance", "tiny.img")
        with open(path, "wb") as f:
            f.write(b"\0" * 1048576)  # never read by the fake driver
        conn.image.create_image(name=ep["image"], filename=path, disk_format="raw",
                                container_format="bare", visibility="public", wait=True)
    # tests and benchmarks boot many and big servers: no quota on the admin project
    project = conn.identity.find_project("admin", domain_id="default")
    conn.compute.update_quota_set(project.id, instances=-1, cores=-1, ram=-1)
    print("image", ep["image"], "flavor", ep["flavor"], "admin quotas unlimited")


def wait_computes(ep, timeout=150.0):
    conn = connect(ep)
    want = set(ep["computes"])
    up = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            up = {s.host for s in conn.compute.services(binary="nova-compute")
                  if s.state == "up"}
            # volumes can be created once cinder-volume reported to the scheduler
            if any(s.binary == "cinder-volume" and s.state == "up"
                   for s in conn.block_storage.services()):
                up.add("cinder-volume")
        except Exception as e:  # nova-api or cinder-api still starting
            print("waiting:", type(e).__name__)
        if up >= want | {"cinder-volume"}:
            print("computes and cinder-volume up:", " ".join(sorted(up)))
            return
        time.sleep(0.5)
    raise SystemExit("up after %ss: %s (want %s and cinder-volume)"
                     % (timeout, sorted(up), sorted(want)))


def main(argv):
    with open(os.path.join(argv[1], "endpoints.json")) as f:
        ep = json.load(f)
    {"catalog": catalog, "image": image, "wait-computes": wait_computes}[argv[2]](ep)


if __name__ == "__main__":
    main(sys.argv)
