"""[fencing] options: where the BMC inventory is and how hard to try to fence."""

from oslo_config import cfg

GROUP = "fencing"

group = cfg.OptGroup(GROUP, title="Fencing",
                     help="Powering failed hosts off through their BMC, proved by a read-back.")

opts = [
    cfg.StrOpt(
        "inventory_file",
        default=None,
        sample_default="/etc/instanceha/fencing-inventory.yaml",
        help="Path of the fencing inventory (YAML): host name -> BMC driver, address, "
        "credentials. A host with no entry is never fenced, so never evacuated. A file "
        "that holds passwords and is world-readable is refused.",
    ),
    cfg.FloatOpt(
        "deadline",
        default=60.0,
        min=1.0,
        max=3600.0,
        help="Total time, in seconds, to get a power action confirmed by a read-back "
        "(requests, retries and polls included). An inventory entry's 'deadline' "
        "overrides it for that host.",
    ),
    cfg.FloatOpt(
        "poll_interval",
        default=1.0,
        min=0.05,
        max=60.0,
        help="Interval between two power-state read-backs after a request, in seconds.",
    ),
    cfg.FloatOpt(
        "retry_backoff",
        default=1.0,
        min=0.05,
        max=60.0,
        help="First wait before a failed (or unconfirmed) power request is sent again, "
        "in seconds; it doubles at each retry up to retry_backoff_max.",
    ),
    cfg.FloatOpt(
        "retry_backoff_max",
        default=10.0,
        min=0.1,
        max=300.0,
        help="Longest wait between two power requests to one BMC, in seconds.",
    ),
    cfg.IntOpt(
        "max_concurrent",
        default=16,
        min=1,
        max=256,
        help="The number of BMCs fenced (or checked) at the same time at most, so one slow "
        "BMC never holds the others back.",
    ),
    cfg.BoolOpt(
        "power_on_after_recovery",
        default=False,
        help="Power a fenced host back on once its instances were evacuated (it comes "
        "back empty, for the operator or automation to re-admit). Off by default: the "
        "host stays off until someone looks at it.",
    ),
]


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def list_opts():
    return {group: opts}


def fence_policy(conf):
    """[fencing] as a frozen FencePolicy, or ConfigError naming the option and file."""
    from instanceha.conf.policy import config_error
    from instanceha.fencing.confirm import FencePolicy

    f = conf.fencing
    if f.retry_backoff > f.retry_backoff_max:
        raise config_error(conf, GROUP, "retry_backoff",
                           f"must not exceed [fencing] retry_backoff_max ({f.retry_backoff_max})")
    if f.poll_interval >= f.deadline:
        raise config_error(conf, GROUP, "poll_interval",
                           f"must be shorter than [fencing] deadline ({f.deadline})")
    return FencePolicy(deadline=f.deadline, poll_interval=f.poll_interval,
                       retry_backoff=f.retry_backoff, retry_backoff_max=f.retry_backoff_max,
                       max_concurrent=f.max_concurrent,
                       power_on_after_recovery=f.power_on_after_recovery)


def load_inventory(conf):
    """The validated inventory of [fencing] inventory_file (raises a typed error)."""
    from instanceha.conf.policy import config_error
    from instanceha.fencing import inventory

    path = conf.fencing.inventory_file
    if not path:
        raise config_error(conf, GROUP, "inventory_file",
                           "not set: no host can be fenced without a fencing inventory")
    return inventory.load(path)


def make_fencer(conf):
    """A Fencer from [fencing]: the edge turns options into objects, here."""
    from instanceha.fencing import Fencer

    return Fencer(load_inventory(conf), fence_policy(conf))

