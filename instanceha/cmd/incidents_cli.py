"""``instanceha incidents``: the incident journal, for operators.

    instanceha incidents [--host HOST] [--open] [--limit N] [--format table|json]
    instanceha incidents show ID [--format table|json]

The journal is written by the leading controller into the coordinator (one
incident per failure of a host, kept across leader changes; see
instanceha/controller/journal.py). Exit codes: 0 OK; 1 a listed incident
needs an operator (held, its fence failing, or its agent down); 2 error
(coordinator unreachable, no such incident, bad input).
"""

from __future__ import annotations

import datetime
import json
import sys
import time

from instanceha import exceptions
from instanceha.cmd import common
from instanceha.cmd.ops_cli import run_connected

NEEDS_OPERATOR = ("held", "fence-failed", "gave-up", "agent-down")


def _when(epoch) -> str:
    if not isinstance(epoch, (int, float)):
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S")


def _age(epoch) -> str:
    if not isinstance(epoch, (int, float)):
        return "-"
    s = max(0.0, time.time() - epoch)
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h"


def _fence(summary) -> str:
    fence = summary.get("fence")
    if not isinstance(fence, dict):
        return "-"
    if fence.get("driver") == "operator-attestation":
        return f"attested by {fence.get('by', '?')}"
    return f"{fence.get('driver', '?')}: {fence.get('read_back', '?')}"


def _list(args, conf) -> int:
    if args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2

    def body(coord):
        found = [dict(s, id=s.get("id", i)) for i, s in coord.incidents().items()]
        if args.host:
            found = [s for s in found if s.get("host") == args.host]
        if args.open:
            found = [s for s in found if s.get("state") != "closed"]
        found.sort(key=lambda s: s.get("opened_at") or 0, reverse=True)
        found = found[: args.limit]
        if args.format == "json":
            print(json.dumps(found, indent=2, sort_keys=True))
        elif not found:
            print("no incidents")
        else:
            rows = [("ID", "HOST", "STATE", "OPENED (UTC)", "UPDATED", "FENCE",
                     "EVAC/FAILED/NOTIFIED/IGNORED", "LAST")]
            for s in found:
                counts = "/".join(str(s.get(k, 0)) for k in
                                  ("evacuated", "failed", "notified", "ignored"))
                host = s.get("host", "?")
                if s.get("instance_id"):
                    host = f"{host} (guest {s['instance_id'][:8]})"
                if s.get("type") == "guest":  # a guest failure: its outcome(s)
                    counts = ",".join(f"{k}:{s[k]}" for k in (
                        "restarted", "notified", "gave_up", "left_alone", "ignored",
                        "not_needed", "dry_run") if s.get(k))
                rows.append((s["id"], host, s.get("state", "?"),
                             _when(s.get("opened_at")), _age(s.get("updated_at")) + " ago",
                             _fence(s), counts, str(s.get("reason", ""))[:60]))
            print("\n".join(common.table_lines(rows)))
        return 1 if any(s.get("state") in NEEDS_OPERATOR for s in found) else 0

    return run_connected(conf, body)


def _show(args, conf) -> int:
    def body(coord):
        summaries = coord.incidents()
        try:
            entries = coord.incident_entries(args.incident)
        except exceptions.IncidentNotFound as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        summary = dict(summaries.get(args.incident, {}), id=args.incident)
        if args.format == "json":
            print(json.dumps({"incident": summary, "entries": entries}, indent=2,
                             sort_keys=True))
        else:
            print(f"incident {args.incident}: host {summary.get('host', '?')}, "
                  f"{summary.get('state', '?')} ({summary.get('reason', '')})")
            print(f"opened {_when(summary.get('opened_at'))} UTC by "
                  f"{summary.get('opened_by', '?')}; fence: {_fence(summary)}")
            start = entries[0].get("at") if entries else None
            rows = [("+SECONDS", "TIME (UTC)", "BY", "KIND", "WHAT")]
            for entry in entries:
                at = entry.get("at")
                since = f"+{at - start:.1f}" if isinstance(at, (int, float)) and \
                    isinstance(start, (int, float)) else "-"
                rows.append((since, _when(at), entry.get("by", "?"), entry.get("kind", "?"),
                             str(entry.get("text", ""))[:120]))
            print("\n".join(common.table_lines(rows)))
        return 1 if summary.get("state") in NEEDS_OPERATOR else 0

    return run_connected(conf, body)


def register(sub) -> None:
    p = sub.add_parser("incidents", help="the incident journal: every failure and what "
                       "was done about it")
    p.add_argument("--host", help="only this host's incidents")
    p.add_argument("--open", action="store_true", help="only incidents not closed")
    p.add_argument("--limit", type=int, default=50, help="newest N (default 50)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=_list)
    isub = p.add_subparsers(dest="incidents_cmd")
    s = isub.add_parser("show", help="one incident's timeline")
    s.add_argument("incident", help="incident id (first column of 'instanceha incidents')")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.set_defaults(handler=_show)
