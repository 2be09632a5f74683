"""What the failover capacity shows operators: the bounded report of
``instanceha status`` and ``instanceha capacity``, and the
``instanceha.capacity.changed`` notification when coverage flips."""

from __future__ import annotations

from instanceha.engine import capacity as cap
from instanceha.engine.capacity_coverage import Coverage
from instanceha.engine.capacity_plan import FailurePlan
from instanceha.engine.instance_policy import priority_name

MAX_FAILURES_SHOWN = 50
"""Failures (hosts, domains) listed in the published report; the rest are counted."""
MAX_SERVERS_SHOWN = 10
"""Servers without room listed per failure."""
ALL_HOSTS_UP_TO = 50
"""Up to this many hosts, every host's row is published (covered ones too)."""


def tolerance(coverage: Coverage) -> str:
    """The coverage's failure tolerance as the logs say it."""
    p = coverage.policy
    return "domain" if p.tolerance.value == "domain" else f"{p.hosts} host(s)"


def material(coverage: Coverage) -> tuple:
    """What the report shows of ``coverage`` (a change bumps the revision)."""
    return (coverage.covered, tuple(coverage.uncovered_hosts()),
            tuple(coverage.uncovered_domains()), tuple(sorted(coverage.shortfall().items())),
            None if coverage.worst is None else coverage.worst.covered)


def summary(coverage: Coverage, model: cap.Model, everything: bool) -> dict:
    """Counts, the shortfall and the failures (bounded unless ``everything``)."""
    hosts = coverage.hosts
    rows = []
    show_all = everything or len(hosts) <= ALL_HOSTS_UP_TO
    for name in sorted(hosts):
        p = hosts[name]
        if show_all or not p.covered:
            rows.append(_row("host", name, p, model, None if everything else MAX_SERVERS_SHOWN))
    for name in sorted(coverage.domains):
        p = coverage.domains[name]
        if show_all or not p.covered:
            rows.append(_row("domain", name, p, model,
                             None if everything else MAX_SERVERS_SHOWN))
    if coverage.worst is not None:
        rows.append(_row("hosts", ", ".join(sorted(coverage.worst.failed)), coverage.worst,
                         model))
    shown = rows if everything else rows[:MAX_FAILURES_SHOWN]
    return {"tolerance": coverage.policy.tolerance.value, "hosts": coverage.policy.hosts,
            "covered": coverage.covered,
            "counts": {"hosts": len(hosts), "uncovered_hosts": len(coverage.uncovered_hosts()),
                       "domains": len(coverage.domains),
                       "uncovered_domains": len(coverage.uncovered_domains()),
                       "servers": len(model.servers)},
            "shortfall": coverage.shortfall(), "failures": shown,
            "more_failures": len(rows) - len(shown)}


def _row(kind: str, name: str, p: FailurePlan, model: cap.Model,
         limit: int | None = MAX_SERVERS_SHOWN) -> dict:
    servers = len(p.placed) + len(p.unplaced)
    return {"kind": kind, "name": name, "covered": p.covered, "servers": servers,
            "placed": len(p.placed), "short": p.shortfall(),
            "failed": sorted(p.failed) if kind != "host" else [name],
            "spares": list(p.spares),
            "without_room": [{"id": u.server.id, "name": u.server.name,
                              "host": u.server.host,
                              "priority": priority_name(u.server.priority),
                              "reason": u.reason}
                             for u in p.unplaced[:limit]],
            "more_without_room": max(0, len(p.unplaced) - (limit or len(p.unplaced)))}


def change_event(coverage: Coverage, was: bool | None, dry_run: bool = False,
                 change_id: str = "0"):
    """The ``instanceha.capacity.changed`` notification for a flip."""
    from instanceha.notify import events

    short = [(name, p) for name, p in coverage.counted().items() if not p.covered]
    reason = ("covered: every counted failure finds room" if coverage.covered else
              "; ".join(f"{name}: {len(p.unplaced)} server(s) without room"
                        for name, p in short[:3]) + (f"; {len(short) - 3} more" if
                                                      len(short) > 3 else ""))
    return events.capacity_changed(
        covered=coverage.covered, previous=was, tolerance=coverage.policy.tolerance.value,
        hosts=coverage.policy.hosts,
        failures=[{"name": name, "without_room": len(p.unplaced), "short": p.shortfall()}
                  for name, p in short[:20]],
        uncovered=len(short), shortfall=coverage.shortfall(), reason=reason, dry_run=dry_run,
        change_id=change_id)
