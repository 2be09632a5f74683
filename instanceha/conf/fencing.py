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
        "test_only_allow_fake_driver",
        default=False,
        help="TEST ONLY. Accept the 'fake' fencing driver in the inventory. It powers "
        "nothing off and answers 'off': a host 'fenced' with it keeps running while its "
        "instances are rebuilt elsewhere, twice on shared storage. Without this switch "
        "the controller refuses such an inventory at start (and on a reload), and "
        "'instanceha config check' says so. For the project's tests, the demo's dry "
        "runs and devstack; never in production.",
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


FAKE = "fake"


def inventory_loader(conf):
    """``load(path) -> Inventory``: the inventory validated, and refused when it
    names the ``fake`` driver without ``[fencing] test_only_allow_fake_driver``
    (the controller loads it at start and again when the file changes)."""
    from instanceha.fencing import exceptions as fencing_exc
    from instanceha.fencing import inventory

    allowed = conf.fencing.test_only_allow_fake_driver

    def load(path: str):
        inv = inventory.load(path)
        fakes = fake_hosts(inv)
        if fakes and not allowed:
            raise fencing_exc.InventoryError(
                file=path, host=fakes[0], key="driver",
                reason=f"the '{FAKE}' driver powers nothing off and reports the host off: its "
                f"instances would run twice ({len(fakes)} host(s) use it). It is for tests "
                "only: give the host its real BMC, or set [fencing] "
                "test_only_allow_fake_driver = true in a test's configuration")
        return inv

    return load


def fake_hosts(inv) -> list[str]:
    """The hosts whose fencing is the fake driver (for the loud warnings)."""
    return sorted(h for h in inv.hosts() if any(d.driver == FAKE for d in inv.devices(h)))


def load_inventory(conf):
    """The validated inventory of [fencing] inventory_file (raises a typed error)."""
    from instanceha.conf.policy import config_error

    path = conf.fencing.inventory_file
    if not path:
        raise config_error(conf, GROUP, "inventory_file",
                           "not set: no host can be fenced without a fencing inventory")
    return inventory_loader(conf)(path)


def make_fencer(conf):
    """A Fencer from [fencing]: the edge turns options into objects, here."""
    from instanceha.fencing import Fencer

    return Fencer(load_inventory(conf), fence_policy(conf))

