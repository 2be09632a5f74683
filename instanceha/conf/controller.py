"""[controller] options: what the leading controller may do."""

from oslo_config import cfg

GROUP = "controller"

group = cfg.OptGroup(GROUP, title="Controller", help="Options of instanceha-controller.")

opts = [
    cfg.BoolOpt(
        "dry_run",
        default=False,
        help="Observe, decide, log and notify what would be done, and do nothing: "
        "no host is fenced, no service forced down, no instance evacuated. Each failure "
        "that would be fenced sends one instanceha.host.failed notification with "
        "dry_run=true and is recorded in the incident journal.",
    ),
    cfg.IntOpt(
        "max_failed_hosts",
        default=10,
        min=1,
        max=100000,
        help="Mass-failure guard: when more hosts than this number look dead at once "
        "(SUSPECT or FAILED), every fence is held until an operator releases the hold "
        "or the picture is back under the limits and stable.",
    ),
    cfg.FloatOpt(
        "max_failed_percent",
        default=34.0,
        min=1.0,
        max=100.0,
        help="Mass-failure guard: hold every fence when more than this percent of the "
        "monitored hosts look dead at once.",
    ),
    cfg.IntOpt(
        "max_fences_per_tick",
        default=5,
        min=1,
        max=1000,
        help="At most this number of hosts are handed over to fencing per tick.",
    ),
    cfg.FloatOpt(
        "guard_stable_after",
        default=60.0,
        min=0.0,
        max=86400.0,
        help="An automatic safety hold lifts once the hosts looking dead are back under "
        "the limits and unchanged for this many seconds.",
    ),
    cfg.IntOpt(
        "max_failed_hosts_per_aggregate",
        default=0,
        min=0,
        max=100000,
        help="Mass-failure guard, per Nova host aggregate: hold every fence when more "
        "hosts than this number look dead in any one aggregate (a host in several "
        "aggregates counts in each). 0: no absolute per-aggregate limit.",
    ),
    cfg.FloatOpt(
        "max_failed_percent_per_aggregate",
        default=50.0,
        min=1.0,
        max=100.0,
        help="Mass-failure guard, per Nova host aggregate: hold every fence when more "
        "than this percent of the monitored hosts of any one aggregate look dead (at "
        "least 2 hosts, and only in aggregates of at least aggregate_min_hosts "
        "monitored hosts). 100: no per-aggregate percent limit. While the aggregates "
        "were never read from Nova, the guard assumes every host that looks dead may "
        "be in one aggregate.",
    ),
    cfg.IntOpt(
        "aggregate_min_hosts",
        default=4,
        min=1,
        max=100000,
        help="max_failed_percent_per_aggregate applies to aggregates of at least this "
        "number of monitored hosts (a 2-host aggregate losing one host is not a mass "
        "failure).",
    ),
    cfg.FloatOpt(
        "aggregates_refresh",
        default=300.0,
        min=10.0,
        max=86400.0,
        help="Seconds between two background reads of Nova's host aggregates for the "
        "per-aggregate limits (a failed read is retried after at most 30 seconds; "
        "the last grouping read stays in use meanwhile).",
    ),
    cfg.IntOpt(
        "max_vanished_per_tick",
        default=3,
        min=0,
        max=100000,
        help="Mass-failure guard: hold every fence when more hosts than this number "
        "leave HEALTHY/DEGRADED for SUSPECT/FAILED together (between two ticks, or "
        "within one [agent] heartbeat_interval plus one [detection] tick_interval, "
        "seconds in which hosts cut off at the same instant are seen going silent), "
        "as in a network partition or a coordinator failure, even when the "
        "cluster-wide limits are not exceeded. 0: no such limit.",
    ),
]


recovery_opts = [
    cfg.BoolOpt(
        "reenable_after_repair",
        default=True,
        help="When a recovered host is back (agent joined, nova-compute running, its "
        "evacuated instances cleaned up), unset forced-down and enable its nova-compute "
        "service. False keeps it disabled for an operator.",
    ),
    cfg.IntOpt(
        "flap_failures",
        default=2,
        min=1,
        max=100,
        help="A host fenced this number of times within flap_window stays disabled "
        "(held) for an operator instead of being re-enabled.",
    ),
    cfg.FloatOpt(
        "flap_window",
        default=3600.0,
        min=0.0,
        max=30 * 86400.0,
        help="Window of flap_failures, in seconds.",
    ),
    cfg.IntOpt(
        "recovery_workers",
        default=8,
        min=1,
        max=256,
        help="Hosts whose recovery steps (evacuations, re-enable, hold) run at the same "
        "time (a count). Fences do not use these: they run on workers of their own, as "
        "many as max_failed_hosts, so a fence never waits for a recovery.",
    ),
]

journal_opts = [
    cfg.IntOpt(
        "incident_retention_count",
        default=500,
        min=1,
        max=100000,
        help="Incident journal: the number of closed incidents kept (the newest); older "
        "ones are deleted when a new incident opens. Open incidents are always kept.",
    ),
    cfg.FloatOpt(
        "incident_retention_days",
        default=90.0,
        min=0.01,
        max=3650.0,
        help="Incident journal: closed incidents whose last entry is older than this "
        "number of days are deleted.",
    ),
]
opts = opts + recovery_opts + journal_opts


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def list_opts():
    return {group: opts}
