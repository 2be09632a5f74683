"""[agent] options of instanceha-agent, the per-compute heartbeat daemon."""

from oslo_config import cfg

GROUP = "agent"

group = cfg.OptGroup(GROUP, title="Agent", help="Options of instanceha-agent.")

opts = [
    cfg.FloatOpt(
        "heartbeat_interval",
        default=0.5,
        min=0.05,
        max=30.0,
        help="Interval between two data heartbeats written by the agent's main loop, "
        "in seconds. Must be shorter than [detection] heartbeat_stale_after.",
    ),
    cfg.FloatOpt(
        "health_check_interval",
        default=2.0,
        min=0.1,
        max=300.0,
        help="Interval between two checks of the local services (nova-compute, "
        "libvirtd), in seconds. A change is published at once.",
    ),
    cfg.DictOpt(
        "watched_processes",
        default={"nova-compute": "nova-compute", "libvirtd": "libvirtd"},
        help="Local services whose health the agent publishes, as "
        "name:pattern pairs. A service is running when a process whose command "
        "line contains the pattern exists. 'nova-compute' is the one the "
        "controller uses to tell 'nova-compute crashed' from 'host gone'.",
    ),
]


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def list_opts():
    return {group: opts}
