"""[coordination] options: the ZooKeeper (or test) coordination backend."""

from oslo_config import cfg

GROUP = "coordination"

group = cfg.OptGroup(
    GROUP,
    title="Coordination backend",
    help="Where agents heartbeat and controllers elect their leader.",
)

opts = [
    cfg.StrOpt(
        "backend_url",
        default="zookeeper://127.0.0.1:2181",
        secret=True,
        help="Coordination backend URL. The scheme names the backend "
        "(entry point in 'instanceha.coordination.backends'): "
        "'zookeeper://host1:2181,host2:2181,host3:2181' for production, "
        "'memory://' for tests only. Secret because it may carry credentials.",
    ),
    cfg.FloatOpt(
        "session_timeout",
        default=2.0,
        min=1.0,
        max=60.0,
        help="Coordinator session timeout requested from ZooKeeper, in seconds. A "
        "member whose session is silent this long is removed. ZooKeeper clamps it "
        "to [2, 20] x its tickTime; the daemons refuse to start when the server "
        "grants another value. 2-3 s is the measured safe range. [detection] "
        "hung_after must be longer than [agent] heartbeat_interval + 2/3 of it.",
    ),
    cfg.FloatOpt(
        "connect_timeout",
        default=10.0,
        min=0.5,
        max=300.0,
        help="How long one connection attempt to the coordinator may take, in seconds.",
    ),
    cfg.FloatOpt(
        "reconnect_max_delay",
        default=5.0,
        min=0.1,
        max=300.0,
        help="Upper bound of the exponential back-off between reconnection attempts "
        "while the coordinator is unreachable, in seconds.",
    ),
    cfg.FloatOpt(
        "consistency_interval",
        default=60.0,
        min=0.0,
        max=86400.0,
        help="The controller follows hosts and members by watches on changes only; "
        "as a safety net it also reads every host's registry entry and membership "
        "again once per this many seconds (a slice at each tick, not all at once) "
        "and corrects, and logs, any difference no watch event explained. 0 "
        "turns the safety net off.",
    ),
    cfg.StrOpt(
        "root_path",
        default="/instanceha",
        regex=r"^(/[A-Za-z0-9_.-]+)+$",
        help="Root node of instanceha's data in the coordinator. Clouds sharing one "
        "ZooKeeper ensemble must use distinct roots.",
    ),
]


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def list_opts():
    return {group: opts}
