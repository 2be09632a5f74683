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
        help="Interval between two iterations of the agent's main loop, in seconds: "
        "the granularity of its loop watchdog. Must be shorter than [detection] "
        "heartbeat_stale_after.",
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
        mutable=True,
        help="Local services whose health the agent publishes, as "
        "name:pattern pairs. A service is running when a process whose command "
        "line contains the pattern exists. 'nova-compute' is the one the "
        "controller uses to tell 'nova-compute crashed' from 'host gone'. Re-read "
        "on SIGHUP.",
    ),
]


opts.append(cfg.StrOpt(
    "session_file",
    default="/run/instanceha/agent-session.json",
    help="Where the agent keeps its coordinator session's id and password, so that "
    "a restarted agent (killed, crashed, upgraded) resumes the same session when it "
    "comes back within the session timeout: its membership never vanishes and its "
    "host is never suspected. Written 0600 by the agent's user, removed at a "
    "planned stop; a file owned by another user or readable by others is ignored. "
    "Keep it on tmpfs in a directory only the agent's user can enter (the systemd "
    "unit's RuntimeDirectory=instanceha makes /run/instanceha so, and keeps it "
    "across restarts). Empty: never resume (every restart is seen as the agent's "
    "death, which the controllers' second source of liveness then judges).",
))


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def list_opts():
    return {group: opts}
