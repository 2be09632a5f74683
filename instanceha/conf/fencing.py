"""[fencing] options: the BMC inventory and how hard to try."""

from oslo_config import cfg

GROUP = "fencing"

group = cfg.OptGroup(GROUP, title="Fencing",
                     help="How the controller proves a failed host is powered off.")

opts = [
    cfg.StrOpt(
        "inventory_file",
        default=None,
        sample_default="/etc/instanceha/fencing-inventory.yaml",
        help="YAML file mapping each compute host to its BMC (driver, address, "
        "credentials). Unset: nothing is ever fenced, and so nothing is ever "
        "evacuated (the controller only logs failures)."),
    cfg.FloatOpt("deadline", default=60.0, min=1.0, max=3600.0,
                 help="Total time to confirm one power action by a read-back, in seconds."),
    cfg.FloatOpt("poll_interval", default=1.0, min=0.05, max=60.0,
                 help="Interval between two power-state read-backs, in seconds."),
    cfg.FloatOpt("retry_backoff", default=1.0, min=0.05, max=300.0,
                 help="First wait, in seconds, before re-sending a power request; "
                 "doubles after each try."),
    cfg.FloatOpt("retry_backoff_max", default=10.0, min=0.1, max=600.0,
                 help="Longest wait between two power requests, in seconds."),
    cfg.IntOpt("max_concurrent", default=16, min=1, max=1024,
               help="The number of BMCs talked to at the same time."),
    cfg.BoolOpt("power_on_after_recovery", default=False,
                help="Power a fenced host on again once its instances are recovered "
                "(it then rejoins and is re-enabled when repaired)."),
]


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def list_opts():
    return {group: opts}


def fence_policy(conf):
    from instanceha.fencing.confirm import FencePolicy

    c = conf[GROUP]
    return FencePolicy(deadline=c.deadline, poll_interval=c.poll_interval,
                       retry_backoff=c.retry_backoff,
                       retry_backoff_max=max(c.retry_backoff_max, c.retry_backoff),
                       max_concurrent=c.max_concurrent,
                       power_on_after_recovery=c.power_on_after_recovery)
