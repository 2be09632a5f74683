#!/usr/bin/env python3
"""Small helpers for up.sh (standard library only).

  mctool.py render-tree SRC_DIR DST_DIR
      copy SRC_DIR to DST_DIR; "*.in" files are rendered (suffix dropped),
      "*.tmpl" files are skipped (per-instance, see render-file).
  mctool.py render-file SRC DST [NAME=VALUE ...]
  mctool.py ports-free PORT ...
      exit 1, listing them, if any of these 127.0.0.1 TCP ports is bound.
  mctool.py find-port-base COUNT [START]
      print the first base B >= START (step 10) with B..B+COUNT-1 all free.
  mctool.py rewrite-ports OLD_BASE NEW_BASE COUNT  < IN > OUT
      move every "127.0.0.1:PORT" of the block OLD_BASE.. to NEW_BASE.. (one pass).
  mctool.py write-endpoints DST_JSON
      the endpoints file that tests, benchmarks and the demo read.
  mctool.py host-ip PORT_BASE N
      the management address of compute N (its own loopback address, unique
      per cloud: 127.X.Y.N from the port base).

Placeholders are @NAME@; the value comes from the environment variable
MC_NAME (or NAME=VALUE arguments). An unknown placeholder is an error.
"""

import json
import os
import re
import shutil
import socket
import sys

PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def render_text(text, extra, src):
    def sub(m):
        name = m.group(1)
        if name in extra:
            return extra[name]
        if "MC_" + name in os.environ:
            return os.environ["MC_" + name]
        raise SystemExit(f"{src}: no value for placeholder @{name}@ (set MC_{name})")

    return PLACEHOLDER.sub(sub, text)


def render_file(src, dst, extra=None):
    with open(src) as f:
        text = render_text(f.read(), extra or {}, src)
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    tmp = dst + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    shutil.copymode(src, tmp)
    os.replace(tmp, dst)


def render_tree(src_dir, dst_dir):
    for root, _dirs, files in os.walk(src_dir):
        out = os.path.normpath(os.path.join(dst_dir, os.path.relpath(root, src_dir)))
        os.makedirs(out, exist_ok=True)
        for name in files:
            src = os.path.join(root, name)
            if name.endswith(".tmpl"):
                continue
            if name.endswith(".in"):
                render_file(src, os.path.join(out, name[:-3]))
            else:
                shutil.copy(src, os.path.join(out, name))


def busy_ports(ports):
    busy = []
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # a TIME_WAIT leftover is fine; a LISTEN socket still makes bind() fail
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", int(port)))
        except OSError:
            busy.append(int(port))
        finally:
            s.close()
    return busy


def ports_free(ports):
    busy = busy_ports(ports)
    if busy:
        print("busy: " + " ".join(map(str, busy)))
        return 1
    return 0


def find_port_base(count, start=21000):
    # start at a pseudo-random offset so parallel runs rarely race for one block
    base = start + (os.getpid() % 400) * 10
    for _ in range(3000):
        if base + count > 60000:
            base = start
        if not busy_ports(range(base, base + count)):
            print(base)
            return 0
        base += 10
    raise SystemExit("no free block of %d ports found" % count)


def rewrite_ports(old, new, count):
    rx = re.compile(r"127\.0\.0\.1:(\d+)")

    def sub(m):
        port = int(m.group(1))
        return f"127.0.0.1:{new + port - old}" if old <= port < old + count else m.group(0)

    for line in sys.stdin:
        sys.stdout.write(rx.sub(sub, line))


def host_ip(port_base, n):
    """compute N's own loopback address (nova-compute's my_ip, Nova's host_ip):
    the controllers' second source probes it; a test silences it to kill the
    host. Unique per running cloud: port bases differ."""
    base = int(port_base)
    return f"127.{(base // 256) % 256}.{base % 256}.{int(n)}"


def write_endpoints(dst):
    e = os.environ
    p = {k[len("MC_PORT_"):].lower(): int(v) for k, v in e.items() if k.startswith("MC_PORT_")}
    run = e["MC_RUN_DIR"]
    lo = "127.0.0.1"
    computes = [f"compute{n}" for n in range(1, int(e["MC_COMPUTES"]) + 1)]
    data = {
        "run_dir": run,
        "minicloud_dir": e["MC_MINICLOUD_DIR"],
        "python": e["MC_PYTHON"],
        "pid_dir": os.path.join(run, "pids"),
        "log_dir": os.path.join(run, "log"),
        "etc_dir": e["MC_ETC"],
        "port_base": int(e["MC_PORT_BASE"]),
        "ports": p,
        "clouds_yaml": os.path.join(run, "clouds.yaml"),
        "cloud": "minicloud",
        "auth": {
            "auth_url": f"http://{lo}:{p['keystone']}/v3",
            "username": "admin",
            "password": "admin",
            "project_name": "admin",
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        "region_name": "RegionOne",
        "transport_url": f"rabbit://guest:guest@{lo}:{p['amqp']}/",
        "mysql": f"mysql+pymysql://openstack:secret@{lo}:{p['mysql']}/",
        "keystone": f"http://{lo}:{p['keystone']}/v3",
        "placement": f"http://{lo}:{p['placement']}",
        "glance": f"http://{lo}:{p['glance']}",
        "neutron": f"http://{lo}:{p['neutron']}",
        "nova": f"http://{lo}:{p['nova']}/v2.1",
        "cinder": f"http://{lo}:{p['cinder']}/v3",
        "computes": computes,
        "host_ips": {c: host_ip(e["MC_PORT_BASE"], i)
                     for i, c in enumerate(computes, start=1)},
        "image": "tiny",
        "flavor": "m1.tiny",
        "compute_script": os.path.join(e["MC_MINICLOUD_DIR"], "lib", "compute.sh"),
    }
    tmp = dst + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, dst)


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "render-tree":
        render_tree(*args)
    elif cmd == "render-file":
        render_file(args[0], args[1], dict(a.split("=", 1) for a in args[2:]))
    elif cmd == "ports-free":
        return ports_free(args)
    elif cmd == "find-port-base":
        return find_port_base(int(args[0]), *(int(a) for a in args[1:]))
    elif cmd == "rewrite-ports":
        rewrite_ports(*(int(a) for a in args))
    elif cmd == "write-endpoints":
        write_endpoints(args[0])
    elif cmd == "host-ip":
        print(host_ip(*args))
    else:
        raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
