"""``instanceha fencing check [HOST...]``: check every fencing device, power nothing.

Reports, per device of each host's fencing levels, whether it is reachable,
accepts the credentials of the inventory, its power state and the latency
(a fence agent: ``action=monitor`` then ``action=status``); each error names
the host, the level and the driver or agent at fault. Exit code 0 when
every BMC answered, 1 when at least one did not, 2 when the configuration or
the inventory is invalid or a HOST named has no entry in it.
"""

from __future__ import annotations

import json
import sys

from instanceha import exceptions
from instanceha.cmd import common
from instanceha.conf import fencing as fencing_conf


def register(subparsers) -> None:
    p = subparsers.add_parser("fencing", help="fencing (BMC) tools")
    sub = p.add_subparsers(dest="fencing_cmd", required=True)
    c = sub.add_parser("check", help="check each fencing device of the inventory "
                       "(reachability, credentials, power state, latency); powers nothing")
    c.add_argument("hosts", nargs="*", metavar="HOST",
                   help="hosts to check (default: every host of the inventory)")
    c.add_argument("--format", choices=("table", "json"), default="table")
    c.set_defaults(handler=run_check)


def _yes_no(value) -> str:
    return {True: "yes", False: "NO", None: "?"}[value]


def format_table(results) -> str:
    header = ("HOST", "DRIVER", "ADDRESS", "LEVEL", "REACHABLE", "AUTH", "POWER", "LATENCY",
              "RESULT")
    rows = [header]
    for r in results:
        rows.append((r.host, r.driver or "-", r.address or "-", str(r.level),
                     _yes_no(r.reachable),
                     _yes_no(r.authenticated), r.power_state or "-",
                     f"{r.latency * 1000:.0f} ms", "ok" if r.ok else r.error_type))
    lines = common.table_lines(rows)
    errors = [(f"{r.host} (level {r.level}, {r.driver}): " if r.driver else f"{r.host}: ")
              + r.error for r in results if not r.ok]
    return "\n".join(lines + ([""] + errors if errors else []))


def run_check(args, conf) -> int:
    try:
        fencer = fencing_conf.make_fencer(conf)
    except exceptions.InstanceHAError as e:
        print(f"fencing check: {e}", file=sys.stderr)
        return 2
    unknown = [h for h in args.hosts if h not in fencer.inventory]
    if unknown:
        print(f"fencing check: not in the fencing inventory {fencer.inventory.source}: "
              f"{', '.join(unknown)}", file=sys.stderr)
        return 2
    try:
        results = fencer.check(args.hosts or None)
    finally:
        fencer.close()
    if args.format == "json":
        print(json.dumps({"hosts": [r.as_dict() for r in results],
                          "ok": all(r.ok for r in results)}, indent=2))
    else:
        print(format_table(results))
    return 0 if all(r.ok for r in results) else 1
