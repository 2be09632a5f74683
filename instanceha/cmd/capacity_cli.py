"""``instanceha capacity``: would each host's (and failure domain's) servers
find room if it failed, and if not, which servers and why.

    instanceha capacity [--format table|json]    # the leader's model, as published
    instanceha capacity --live [--format ...]    # read Placement and Nova now ([nova])

The published answer is the leader's (what it acts on), with its age; it
lists every host up to 50 hosts, else the failures that are not covered. With
``--live`` the CLI reads Placement and Nova itself with the ``[nova]``
credentials and lists everything: no controller needed (planning, a cloud
being built).

Exit codes: 0 covered, 1 not covered (the table says what is short), 2 error
(no leader has published, the model is not known yet, Nova unreachable).
"""

from __future__ import annotations

import json
import sys
import time

from instanceha import exceptions
from instanceha.cmd import common


def _published(args, conf) -> int:
    from instanceha.cmd import ops_cli

    def body(coord):
        doc = coord.read_status()
        if not doc:
            print("error: no leader has published a status yet", file=sys.stderr)
            return 2
        report = doc.get("capacity")
        if report is None:
            print(f"error: the leader {doc.get('leader')} keeps no capacity model (no Nova, "
                  "or [capacity] enabled = false)", file=sys.stderr)
            return 2
        age = time.time() - doc.get("published_at", 0)
        if report.get("age") is not None:
            report = dict(report, age=round(report["age"] + age, 1))
        return _show(args, report, f"leader {doc.get('leader')}")

    return ops_cli.run_connected(conf, body)


def _live(args, conf) -> int:
    from instanceha.compute.capacity_reads import CapacityReads
    from instanceha.conf import nova as nova_conf
    from instanceha.conf import policy
    from instanceha.controller import capacity
    from instanceha.controller.capacity_reader import ModelReader, ReaderSettings

    if not conf.nova.auth_type:
        error = policy.config_error(conf, "nova", "auth_type",
                                    "the [nova] keystone credentials are needed for --live")
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        settings = policy.capacity_settings(conf)
        reader = ModelReader(
            CapacityReads(nova_conf.nova_client(conf)),
            ReaderSettings(default_recovery=policy.default_recovery(conf),
                           default_priority=policy.default_priority(conf),
                           failure_domain_key=conf.capacity.failure_domain_key))
        monitor = capacity.CapacityMonitor(reader, settings, submit=lambda f: f())
        monitor.tick(leading=True)
    except exceptions.InstanceHAError as e:
        print(f"error: {e} ({e.action.value})", file=sys.stderr)
        return 2
    if monitor.error is not None:
        print(f"error: {monitor.error}", file=sys.stderr)
        return 2
    return _show(args, monitor.report(everything=True), "read now")


def _show(args, report, source: str) -> int:
    if args.format == "json":
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print_report(report, source)
    if report.get("covered") is None:
        return 2
    return 0 if report["covered"] else 1


def _amounts(short) -> str:
    return ", ".join(f"{rc}={n}" for rc, n in sorted((short or {}).items())) or "-"


def summary_line(report) -> str:
    """One line: covered or not, the tolerance, the model's age."""
    tolerance = ("any one failure domain" if report.get("tolerance") == "domain"
                 else f"{report.get('hosts', 1)} host(s) failing together")
    if report.get("covered") is None:
        state = "UNKNOWN (no read of Placement and Nova has succeeded yet)"
    else:
        state = "covered" if report["covered"] else "NOT COVERED"
    age = report.get("age")
    when = f"model read {age:.0f}s ago" if age is not None else "never read"
    text = f"failover capacity: {state} for {tolerance}; {when}"
    if report.get("error"):
        text += f"; last read FAILED: {report['error']}"
    return text


def print_report(report, source: str = "") -> None:
    print(summary_line(report) + (f" ({source})" if source else ""))
    counts = report.get("counts")
    if counts is None:
        return
    print(f"{counts.get('hosts', 0)} hosts ({counts.get('uncovered_hosts', 0)} not covered "
          f"on their own), {counts.get('domains', 0)} failure domains "
          f"({counts.get('uncovered_domains', 0)} not covered), {counts.get('servers', 0)} "
          "servers")
    if report.get("shortfall"):
        print(f"short by (the worst counted failure): {_amounts(report['shortfall'])}")
    rows = [("FAILURE", "KIND", "FITS", "SERVERS", "PLACED", "SHORT BY", "SPARES")]
    for f in report.get("failures") or []:
        rows.append((f["name"], f["kind"], "fits" if f["covered"] else "SHORT",
                     str(f["servers"]), str(f["placed"]), _amounts(f.get("short")),
                     ",".join(f.get("spares") or ()) or "-"))
    if len(rows) > 1:
        print("\n".join(common.table_lines(rows)))
    if report.get("more_failures"):
        print(f"... and {report['more_failures']} more failures not listed")
    for f in report.get("failures") or []:
        if not f.get("without_room"):
            continue
        what = f"{f['name']} fails" if f["kind"] != "hosts" else f"hosts {f['name']} fail"
        print(f"\nif {what}, no room for:")
        for s in f["without_room"]:
            print(f"  {s['name']} ({s['id']}) on {s['host']}, priority {s['priority']}: "
                  f"{s['reason']}")
        if f.get("more_without_room"):
            print(f"  ... and {f['more_without_room']} more")


def _capacity(args, conf) -> int:
    return _live(args, conf) if args.live else _published(args, conf)


def register(sub) -> None:
    p = sub.add_parser("capacity", help="failover capacity: would each host's servers find "
                       "room if it failed")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--live", action="store_true",
                   help="read Placement and Nova now with the [nova] credentials instead of "
                   "showing the leader's published model")
    p.set_defaults(handler=_capacity)
