"""[guest] options: guest failures (the instance monitor on each compute host,
and what the leading controller does about them)."""

from oslo_config import cfg

GROUP = "guest"

group = cfg.OptGroup(GROUP, title="Guest failures", help="The instance monitor of "
                     "instanceha-agent (libvirt domain events) and the guest-failure policy "
                     "of instanceha-controller. See doc/source/instance-policy.rst.")

opts = [
    cfg.BoolOpt(
        "monitor",
        default=False,
        help="instanceha-agent: watch this host's libvirt domain events (guest crashed, "
        "QEMU died, watchdog fired, shut down by the guest, I/O error) and report each "
        "failure to the leading controller through the coordinator. Needs the libvirt "
        "python binding (libvirt-python).",
    ),
    cfg.StrOpt(
        "libvirt_uri",
        default="qemu:///system",
        help="instanceha-agent: the libvirt connection URI of this host's hypervisor.",
    ),
    cfg.IntOpt(
        "keepalive_interval",
        default=5,
        min=1,
        max=60,
        help="instanceha-agent: seconds between libvirt keepalive messages; with "
        "keepalive_count, how soon a hung libvirtd counts as a lost connection.",
    ),
    cfg.IntOpt(
        "keepalive_count",
        default=3,
        min=1,
        max=20,
        help="instanceha-agent: the number of keepalive messages without an answer before the "
        "libvirt connection counts as lost (it is then reported and re-opened).",
    ),
    cfg.FloatOpt(
        "coalesce",
        default=10.0,
        min=0.0,
        max=600.0,
        help="How long further failures of the same instance are recorded with the "
        "first (its incident) and not acted on again (a watchdog that fires and then "
        "pauses the guest is one failure), in seconds. A failure after the domain started "
        "again, or after the restart the leader requested, is always a new one.",
    ),
    cfg.StrOpt(
        "default_policy",
        default="ignore",
        choices=[
            ("restart", "ask Nova to hard-reboot (or start) the server"),
            ("notify", "only notify the instance's owner (instanceha.instance.failed)"),
            ("ignore", "do nothing (the failure is still journaled)"),
        ],
        help="instanceha-controller: what happens on a guest failure when neither the "
        "server metadata, flavor, image nor host aggregates say (instanceha:guest).",
    ),
    cfg.IntOpt(
        "max_restarts",
        default=3,
        min=1,
        max=100,
        help="instanceha-controller: the number of restarts of one instance within "
        "restart_window; "
        "after that instanceha gives up, says so (journal, log, instanceha.instance.failed "
        "with action none) and leaves the instance to its owner.",
    ),
    cfg.FloatOpt(
        "restart_window",
        default=3600.0,
        min=60.0,
        max=30 * 86400.0,
        help="instanceha-controller: the window of max_restarts, in seconds.",
    ),
    cfg.FloatOpt(
        "task_state_wait",
        default=300.0,
        min=0.0,
        max=86400.0,
        help="instanceha-controller: how long a guest failure waits while Nova acts on "
        "the server (a task_state) or while its host is SUSPECT, in seconds; then it is "
        "given up (and said so).",
    ),
]


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def list_opts():
    return {group: opts}
