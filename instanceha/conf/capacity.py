"""[capacity] options: failover capacity (admission control), restart
priority, and how evacuations are paced (see doc/source/capacity.rst)."""

from oslo_config import cfg

GROUP = "capacity"

group = cfg.OptGroup(
    GROUP, title="Failover capacity",
    help="The leader keeps a model of the cloud's room (Placement's inventories and "
    "usages, Nova's servers, flavors, server groups, aggregates) and says, before any "
    "failure, whether each host's servers would find room if it failed "
    "(doc/source/capacity.rst).")

opts = [
    cfg.BoolOpt(
        "enabled",
        default=True,
        help="Keep the capacity model (the leader only, when Nova is configured). Off: "
        "no coverage is computed and evacuations go without a planned target, in "
        "priority order.",
    ),
    cfg.FloatOpt(
        "refresh_interval",
        default=60.0,
        min=5.0,
        max=3600.0,
        help="Time between two reads of Placement and Nova for the model, in seconds. Each read "
        "is incremental: the resource providers in one list, then the inventories and "
        "usages of those whose generation moved, the servers changed since the last read, "
        "the server groups. Nova's instance notifications ([nova_notifications]) bring a "
        "read forward, at most every min_interval.",
    ),
    cfg.FloatOpt(
        "min_interval",
        default=5.0,
        min=0.5,
        max=3600.0,
        help="Shortest time between two reads of the model, in seconds, however many "
        "instance notifications ask for one.",
    ),
    cfg.StrOpt(
        "tolerance",
        default="hosts",
        choices=[
            ("hosts", "'hosts' hosts failing together (1: N+1)"),
            ("domain", "any one failure domain failing as a whole"),
        ],
        help="What the cloud must survive to be 'covered'.",
    ),
    cfg.IntOpt(
        "hosts",
        default=1,
        min=1,
        max=1000,
        help="With tolerance = hosts: the number of hosts that may fail together. Above 1 the "
        "worst case is judged, not every combination: the hosts whose failure takes "
        "the most (their evacuable servers' needs plus the room they hold).",
    ),
    cfg.StrOpt(
        "failure_domain_key",
        default="instanceha:failure_domain",
        help="Aggregate metadata key that makes a host aggregate a failure domain (a rack, "
        "a power feed): its value names the domain ('true' or empty: the aggregate's name).",
    ),
    cfg.StrOpt(
        "default_priority",
        default="medium",
        help="The restart priority of a server whose metadata, flavor, image and "
        "aggregates do not set instanceha:priority: lowest, low, medium, high, highest "
        "or a number from 0 to 1000.",
    ),
    cfg.BoolOpt(
        "plan_targets",
        default=True,
        help="Name each evacuation's target host from the model's plan (Nova's scheduler "
        "still checks it). Nova's scheduler weighs requests that arrive together on the "
        "same host state (it counts a placement only after the Placement claim), so "
        "evacuations sent at once all land on one host; a planned target spreads them. "
        "A target Nova refuses is retried without one.",
    ),
    cfg.BoolOpt(
        "defer_without_room",
        default=True,
        help="Servers the plan finds no room for are not sent to Nova (Nova's 'No valid "
        "host' would leave them in ERROR): they are reported, stay on the failed host, "
        "and are sent when room appears. Off: sent anyway.",
    ),
    cfg.IntOpt(
        "max_concurrent_evacuations",
        default=64,
        min=1,
        max=10000,
        help="The number of evacuations in flight at once across every failed host (the "
        "highest priority first when more wait).",
    ),
    cfg.IntOpt(
        "max_evacuations_per_host",
        default=16,
        min=1,
        max=1000,
        help="The number of evacuations in flight at once towards one target host, so that a "
        "surviving host does not take a whole burst of rebuilds at once.",
    ),
]


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def list_opts():
    return {group: opts}
