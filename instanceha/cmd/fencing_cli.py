"""``instanceha fencing check [HOST...]``: can every BMC be reached and read?

Reads the power state of each configured BMC and reports reachability, auth
and latency per host, without powering anything. Exit code 0 when every BMC
answered, 1 when one did not, 2 on bad configuration.
"""

from __future__ import annotations

import json
import sys

from instanceha import exceptions


def _check(args, conf) -> int:
    from instanceha import fencing
    from instanceha.conf import fencing as fencing_conf
    from instanceha.fencing import inventory

    if not conf.fencing.inventory_file:
        print("error: [fencing] inventory_file is not set", file=sys.stderr)
        return 2
    try:
        inv = inventory.load(conf.fencing.inventory_file)
        unknown = [h for h in args.hosts if h not in inv]
        if unknown:
            raise exceptions.InstanceHAError(
                f"not in the fencing inventory {inv.source}: {', '.join(unknown)}")
    except exceptions.InstanceHAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fencer = fencing.Fencer(inv, fencing_conf.fence_policy(conf))
    try:
        results = fencer.check(args.hosts or None)
    finally:
        fencer.close()
    if args.format == "json":
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        rows = [("HOST", "DRIVER", "ADDRESS", "RESULT", "POWER", "LATENCY")]
        for r in results:
            rows.append((r.host, r.driver, r.address, "ok" if r.ok else "FAILED",
                         r.power or "-", f"{r.latency * 1000:.0f} ms"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        for r in results:
            if not r.ok:
                print(f"{r.host}: {r.error} ({r.action})")
    return 0 if all(r.ok for r in results) else 1


def register(sub) -> None:
    p = sub.add_parser("fencing", help="fencing tools")
    fsub = p.add_subparsers(dest="fencing_cmd", required=True)
    c = fsub.add_parser("check", help="read every BMC's power state (powers nothing)")
    c.add_argument("hosts", nargs="*", metavar="HOST")
    c.add_argument("--format", choices=("table", "json"), default="table")
    c.set_defaults(handler=_check)
