"""Simulated agents: many real ZooKeeper sessions in one process.

Each simulated agent is a real ``ZooKeeperCoordinator`` session that joins
and writes the data heartbeat like ``instanceha-agent`` does (the same adapter
code), driven by one scheduler thread for the whole process instead of one
loop per agent. Used by the detection benchmark as background load.

    python benchmarks/sim_agents.py URL ROOT PREFIX COUNT [--interval 0.5]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

from instanceha import exceptions
from instanceha.coordination import get_coordinator


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("root")
    p.add_argument("prefix")
    p.add_argument("count", type=int)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--session-timeout", type=float, default=2.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    agents = []
    for i in range(args.count):
        c = get_coordinator(args.url, session_timeout=args.session_timeout, root_path=args.root,
                            connect_timeout=30.0)
        for attempt in range(10):  # a loaded machine may be slow to connect: retry
            try:
                c.start()
                c.join(f"{args.prefix}{i:05d}", {"services": {"nova-compute": True},
                                                 "boot_id": "sim"})
                break
            except exceptions.CoordinationError as e:
                print(f"agent {i}: {e}; retry {attempt + 1}", file=sys.stderr, flush=True)
                time.sleep(1.0)
        else:
            raise SystemExit(f"agent {i} could not join")
        agents.append(c)
    print(f"ready {len(agents)}", flush=True)
    seq = 0
    rejoins = 0
    while not stop.is_set():
        started = time.monotonic()
        seq += 1
        for i, c in enumerate(agents):
            try:
                if not c.joined():
                    c.join(f"{args.prefix}{i:05d}", {"services": {"nova-compute": True}})
                    rejoins += 1
                c.heartbeat(seq)
            except exceptions.CoordinationError:
                pass
        stop.wait(max(0.0, args.interval - (time.monotonic() - started)))
    print(f"stopping; rejoins={rejoins}", flush=True)
    for c in agents:
        try:
            c.leave("benchmark done", planned=True)
        finally:
            c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
