"""Operator subcommands that talk to the coordinator.

    instanceha status [--format table|json]
    instanceha capacity [--format table|json] [--live]   (capacity_cli)
    instanceha pause --reason TEXT | instanceha resume
    instanceha guard override --minutes N | instanceha guard clear
    instanceha host forget HOST
    instanceha host reserve|unreserve HOST   (reserve_cli: Nova, not the coordinator)

Exit codes: 0 OK (status: every monitored host HEALTHY or STOPPED),
1 status shows hosts needing attention, 2 error (coordinator unreachable,
no leader has published, bad input).
"""

from __future__ import annotations

import datetime
import getpass
import json
import sys
import time

from instanceha import exceptions
from instanceha.cmd import common, coordination_cli, reserve_cli
from instanceha.conf import policy
from instanceha.controller.executor import GUARD_HOLD, GUARD_OVERRIDE_UNTIL, PAUSED


def run_connected(conf, body, role: str | None = None) -> int:
    """``body(coordinator)``'s exit status, connected as ``role`` (the
    operator's credentials by default) and stopped after; an instanceha error
    is printed with what to do next, exit status 2."""
    coord = None
    try:
        coord = policy.coordinator(conf, role=role)
        coord.start()
        return body(coord)
    except exceptions.InstanceHAError as e:
        print(f"error: {e} ({e.action.value})", file=sys.stderr)
        return 2
    finally:
        if coord is not None:
            coord.stop()


def _ago(wall: float | None) -> str:
    if not wall:
        return "-"
    return f"{max(0.0, time.time() - wall):.1f}s"


def _status(args, conf) -> int:
    def body(coord):
        doc = coord.read_status()
        snap = coord.snapshot()
        if not doc:
            print("error: no leader has published a status yet", file=sys.stderr)
            return 2
        if args.format == "json":
            doc = dict(doc, read_at=round(time.time(), 3))
            print(json.dumps(doc, indent=2, sort_keys=True))
        else:
            print_status_table(doc, snap)
        attention = [h for h, d in doc.get("hosts", {}).items()
                     if d.get("phase") not in ("HEALTHY", "STOPPED")
                     or (d.get("guest_monitor") or {}).get("state") == "lost"]
        held = doc.get("guard", {}).get("held") or persisted_hold(snap)
        return 1 if attention or held else 0

    return run_connected(conf, body)


def print_status_table(doc, snap) -> None:
    """``instanceha status`` as text: the leader, the guard (held, persisted,
    overridden), then one line per host."""
    age = time.time() - doc.get("published_at", 0)
    print(f"leader: {doc.get('leader')} (token {doc.get('token')}), "
          f"status published {age:.1f}s ago")
    guard = doc.get("guard", {})
    if guard.get("held"):
        since = f" for {_ago(guard['since'])}" if guard.get("since") else ""
        print(f"SAFETY HOLD{since}: {guard.get('reason')}")
    elif persisted_hold(snap):
        hold = snap.control[GUARD_HOLD]
        print(f"SAFETY HOLD persisted by the leader of term {hold.get('token')} for "
              f"{_ago(hold.get('since'))} (the next leader starts held): {hold.get('reason')}")
    until = snap.control.get(GUARD_OVERRIDE_UNTIL)
    if isinstance(until, (int, float)) and until > time.time():
        by = snap.control.get("guard_override") or {}
        print(f"GUARD OVERRIDDEN for another {until - time.time():.0f}s by {_who(by)}: "
              f"{by.get('reason')}")
    aggregates = guard.get("aggregates")
    if isinstance(aggregates, dict) and (not aggregates.get("known") or aggregates.get("error")):
        words = ["host aggregates " + ("stale" if aggregates.get("known") else
                                       "UNKNOWN (the guard assumes the worst grouping)")]
        if aggregates.get("age") is not None:
            words.append(f"read {aggregates['age']}s ago")
        if aggregates.get("error"):
            words.append(f"last error: {aggregates['error']}")
        print(", ".join(words))
    control = doc.get("control", {})
    if control.get(PAUSED):
        paused = control[PAUSED]
        if isinstance(paused, dict):
            print(f"PAUSED by {_who(paused)} {_ago(_epoch(paused.get('at')))} ago: "
                  f"{paused.get('reason')}")
        else:
            print(f"PAUSED: {paused}")
    rows = [("HOST", "PHASE", "FOR", "HEARTBEAT", "AGENT", "NOVA", "RECOVERY", "REASON")]
    for host, d in sorted(doc.get("hosts", {}).items()):
        services = d.get("services") or {}
        agent = ",".join(f"{k}={'up' if v else 'DOWN'}" for k, v in sorted(services.items()))
        monitor = d.get("guest_monitor") or {}
        if monitor.get("state"):
            agent += f",guests={'watched' if monitor['state'] == 'connected' else 'NOT WATCHED'}"
        hb = d.get("heartbeat_age")
        rows.append((host, d.get("phase", "?"), _ago(d.get("since")),
                     f"{hb + age:.1f}s" if isinstance(hb, (int, float)) else "-",
                     agent or ("-" if d.get("member") else "absent"),
                     _nova(d.get("nova")), (d.get("nova") or {}).get("recovery") or "-",
                     d.get("reason", "")[:70]))
    print("\n".join(common.table_lines(rows)))
    for host, d in sorted(doc.get("hosts", {}).items()):
        if d.get("phase") == "AGENT_DOWN":
            print(f"ALERT agent dead, host alive: {host} for {_ago(d.get('since'))}: not fenced, "
                  f"but unprotected until its agent is back (systemctl status "
                  f"instanceha-agent on {host}); {d.get('reason', '')}")
    for host, d in sorted(doc.get("hosts", {}).items()):
        waiting = (d.get("nova") or {}).get("waiting_on")
        if waiting:
            print(f"{host}: recovery waiting on {waiting} (as published)")
    _print_capacity(doc.get("capacity"), age)
    _print_guests(doc.get("guests"))
    unpublished = sorted(set(snap.hosts) - set(doc.get("hosts", {})))
    if unpublished:
        print(f"registered but not yet in the leader's view: {', '.join(unpublished)}")


def _print_capacity(report, published_age: float) -> None:
    """The failover capacity, in a few lines (``instanceha capacity`` has it all)."""
    if not report:
        return
    from instanceha.cmd.capacity_cli import summary_line

    if report.get("age") is not None:
        report = dict(report, age=report["age"] + published_age)
    print("\n" + summary_line(report))
    short = [f for f in report.get("failures") or () if not f.get("covered")]
    if short:
        names = ", ".join(f"{f['kind']} {f['name']}" for f in short[:5])
        more = len(short) - 5 + (report.get("more_failures") or 0)
        print(f"  not covered: {names}" + (f" and {more} more" if more > 0 else "")
              + "; see 'instanceha capacity'")


def _print_guests(guests) -> None:
    """The guest failures the leader handled lately (``instanceha incidents`` has them all)."""
    if not guests:
        return
    recent = guests.get("recent") or []
    print(f"\nGUEST FAILURES: {guests.get('pending', 0)} queued"
          + (f", queue NOT READ: {guests['read_error']}" if guests.get("read_error") else "")
          + (f", the latest {len(recent)}:" if recent else ""))
    if recent:
        rows = [("AGO", "HOST", "INSTANCE", "KIND", "OUTCOME", "INCIDENT", "NOTE")]
        for r in recent:
            rows.append((_ago(r.get("at")), r.get("host", "?"), r.get("instance_id", "?"),
                         r.get("kind", "?"), r.get("outcome", "?"), r.get("incident_id") or "-",
                         str(r.get("note", ""))[:60]))
        print("\n".join(common.table_lines(rows)))


def _who(record) -> str:
    """The authenticated identity that wrote a switch, and the login it claimed."""
    return f"{record.get('identity') or 'an unknown identity'} (login {record.get('by', '?')})"


def _epoch(iso) -> float | None:
    try:
        return datetime.datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return None


def persisted_hold(snap) -> bool:
    """Whether a leader persisted a safety hold in the control node (the next
    leader starts held), whatever the published status says."""
    hold = snap.control.get(GUARD_HOLD)
    return isinstance(hold, dict) and bool(hold.get("held"))


def _nova(nova) -> str:
    """``up/enabled``, ``down/disabled,forced:fenced``...; ``-`` without Nova."""
    if not nova:
        return "-"
    text = f"{nova.get('state', '?')}/{nova.get('status', '?')}"
    if nova.get("forced_down"):
        text += ",forced"
    if nova.get("marker"):
        text += f":{nova['marker']}"
    return text


def _stamp(reason: str) -> dict:
    return {"reason": reason, "by": getpass.getuser(),
            "at": datetime.datetime.now(datetime.timezone.utc).isoformat()}


def _pause(args, conf) -> int:
    def body(coord):
        coord.update_control({PAUSED: _stamp(args.reason)})
        print(f"paused: no controller acts until 'instanceha resume' ({args.reason})")
        return 0

    return run_connected(conf, body)


def _resume(args, conf) -> int:
    def body(coord):
        coord.update_control({PAUSED: None})
        print("resumed")
        return 0

    return run_connected(conf, body)


def _guard_override(args, conf) -> int:
    if not 1 <= args.minutes <= 24 * 60:
        print("error: --minutes must be between 1 and 1440", file=sys.stderr)
        return 2

    def body(coord):
        until = time.time() + args.minutes * 60
        coord.update_control({GUARD_OVERRIDE_UNTIL: until,
                              "guard_override": _stamp(args.reason)})
        print(f"mass-failure guard overridden for {args.minutes} min: failed hosts WILL be "
              f"fenced even in a storm ({args.reason})")
        return 0

    return run_connected(conf, body)


def _guard_clear(args, conf) -> int:
    def body(coord):
        coord.update_control({GUARD_OVERRIDE_UNTIL: None, "guard_override": None})
        print("mass-failure guard override cleared")
        return 0

    return run_connected(conf, body)


def _confirm_down(args, conf) -> int:
    """An operator attests that HOST is powered off (its BMC cannot confirm it).

    Audited: who, when, why are stored with the attestation, logged by the
    controller that uses it, and written into Nova's marker for the host."""

    def body(coord):
        snap = coord.snapshot()
        if args.host not in snap.hosts:
            print(f"error: {args.host} is not registered", file=sys.stderr)
            return 2
        if args.host in snap.members:
            print(f"error: {args.host} has a live agent: it is not down", file=sys.stderr)
            return 2
        record = dict(_stamp(args.reason), at=time.time())
        coord.update_control({f"attest:{args.host}": record})
        print(f"{args.host}: power-off attested by {record['by']} ({args.reason}); the "
              "leader may now recover its instances even if its BMC cannot confirm")
        return 0

    return run_connected(conf, body)


def _forget(args, conf) -> int:
    def body(coord):
        snap = coord.snapshot()
        if args.host in snap.members:
            print(f"error: {args.host} has a live agent; stop it first", file=sys.stderr)
            return 2
        if args.host not in snap.hosts:
            print(f"error: {args.host} is not registered", file=sys.stderr)
            return 2
        coord.forget_host(args.host)
        print(f"{args.host} forgotten: it is no longer monitored")
        return 0

    return run_connected(conf, body)


def register(sub) -> None:
    p = sub.add_parser("status", help="the leader's view of every host")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=_status)
    p = sub.add_parser("pause", help="stop every controller from acting")
    p.add_argument("--reason", required=True)
    p.set_defaults(handler=_pause)
    p = sub.add_parser("resume", help="undo 'pause'")
    p.set_defaults(handler=_resume)
    g = sub.add_parser("guard", help="the mass-failure guard")
    gsub = g.add_subparsers(dest="guard_cmd", required=True)
    o = gsub.add_parser("override", help="fence despite a safety hold, for a while")
    o.add_argument("--minutes", type=int, required=True)
    o.add_argument("--reason", required=True)
    o.set_defaults(handler=_guard_override)
    c = gsub.add_parser("clear", help="end an override")
    c.set_defaults(handler=_guard_clear)
    h = sub.add_parser("host", help="host registry")
    hsub = h.add_subparsers(dest="host_cmd", required=True)
    d = hsub.add_parser("confirm-down", help="attest that a failed host is powered off "
                        "when its BMC cannot confirm it (audited)")
    d.add_argument("host")
    d.add_argument("--reason", required=True)
    d.set_defaults(handler=_confirm_down)
    f = hsub.add_parser("forget", help="stop monitoring a decommissioned host")
    f.add_argument("host")
    f.set_defaults(handler=_forget)
    reserve_cli.register(hsub)
    coordination_cli.register_host(hsub)
