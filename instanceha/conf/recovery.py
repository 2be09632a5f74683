"""[recovery] options: where the instances of a failed host are evacuated to."""

from oslo_config import cfg

GROUP = "recovery"

group = cfg.OptGroup(
    GROUP, title="Recovery method",
    help="Where the instances of a failed host go: wherever Nova's scheduler places "
    "them, or onto reserved spare hosts (see doc/source/instance-policy.rst).")

opts = [
    cfg.StrOpt(
        "method",
        default="scheduler",
        choices=[
            ("scheduler", "evacuate without a target host: Nova's scheduler places "
             "each instance"),
            ("reserved_hosts", "enable a reserved spare host (its nova-compute disabled "
             "with the reason 'instanceha:v1:reserved') and evacuate to it; the spare "
             "stays in service afterwards"),
        ],
        help="How the target host of an evacuation is chosen.",
    ),
    cfg.StrOpt(
        "reserved_match",
        default="availability_zone",
        choices=[
            ("none", "any reserved spare host"),
            ("aggregate", "a spare sharing at least one host aggregate with the failed "
             "host"),
            ("availability_zone", "a spare in the failed host's availability zone"),
        ],
        help="With method = reserved_hosts: which spares may take a failed host's "
        "instances. Among those that may, the closest is used (same availability zone, "
        "then the most shared aggregates, then the host name).",
    ),
    cfg.BoolOpt(
        "reserved_fallback_to_scheduler",
        default=True,
        help="With method = reserved_hosts: when no matching spare is left, or the "
        "spares have no room, evacuate the remaining instances wherever the scheduler "
        "places them. False reports them as failed to recover (they stay on the failed "
        "host) instead.",
    ),
]


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def list_opts():
    return {group: opts}
