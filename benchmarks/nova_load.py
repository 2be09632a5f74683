"""A read load on nova-api, from its own process: N requests a second, spread
evenly, as operators' dashboards and tools poll a cloud (detailed server
lists, services, hypervisors, migrations), until SIGTERM/SIGINT. Prints the
rate achieved and the answers' latency when stopped.

The credentials come from a JSON file (``endpoints.json`` of the
mini-cloud: its ``auth`` and ``region_name``), never from argv.

    python benchmarks/nova_load.py ENDPOINTS_JSON RATE [--workers 16]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import signal
import statistics
import sys
import threading
import time

PATHS = ("/servers/detail?all_tenants=1&limit=100", "/os-services",
         "/os-hypervisors/detail", "/os-migrations?limit=50", "/flavors/detail")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("endpoints", help="the mini-cloud's endpoints.json")
    p.add_argument("rate", type=float, help="requests per second")
    p.add_argument("--workers", type=int, default=16)
    args = p.parse_args(argv)
    if args.rate <= 0:
        p.error("rate must be positive")
    with open(args.endpoints) as f:
        ep = json.load(f)

    import openstack

    conn = openstack.connect(auth=dict(ep["auth"]), region_name=ep["region_name"],
                             interface="public", identity_api_version="3")
    compute = conn.compute
    compute.get("/os-services", microversion="2.53")  # authenticate before the clock runs
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def one(path: str) -> None:
        t0 = time.monotonic()
        try:
            ok = compute.get(path, microversion="2.60").status_code < 500
        except Exception:  # a load generator reports, never stops
            ok = False
        with lock:
            latencies.append(time.monotonic() - t0)
            if not ok:
                errors[0] += 1

    print(f"nova_load: {args.rate:g} req/s started", flush=True)
    started = time.monotonic()
    sent = 0
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        for n, path in enumerate(itertools.cycle(PATHS)):
            due = started + n / args.rate
            if stop.wait(max(0.0, due - time.monotonic())):
                break
            pool.submit(one, path)
            sent += 1
    elapsed = time.monotonic() - started
    lat = sorted(latencies)
    p95 = lat[int(0.95 * (len(lat) - 1))] if lat else float("nan")
    print(f"nova_load: {sent} requests in {elapsed:.1f} s ({sent / elapsed:.1f}/s), "
          f"{errors[0]} errors, latency p50 {statistics.median(lat) if lat else 0:.3f} s "
          f"p95 {p95:.3f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
