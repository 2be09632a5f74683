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
        default="zookeeper://127.0.0.1:2281",
        secret=True,
        help="Coordination backend URL. The scheme names the backend "
        "(entry point in 'instanceha.coordination.backends'): "
        "'zookeeper://host1:2281,host2:2281,host3:2281' (ZooKeeper's "
        "secureClientPort when tls is on). Secret because it may carry credentials.",
    ),
    cfg.StrOpt(
        "credentials_file",
        help="The YAML file with this daemon's coordination credentials (mode 0600 or "
        "0640: refused when others may read it). Controllers: the key every identity "
        "derives from ('instanceha coordination credentials new-key'); agents: their "
        "host's ('... agent HOST', made on a controller); the CLI: the operators' "
        "('... operator'). Unset: refused, unless insecure = true. See the security "
        "guide.",
    ),
    cfg.BoolOpt(
        "tls",
        default=True,
        help="Connect to ZooKeeper over TLS (its secureClientPort), verifying the "
        "server's certificate against tls_ca_file. Off: refused unless insecure = true "
        "(the digest credentials would cross the network in clear).",
    ),
    cfg.StrOpt(
        "tls_ca_file",
        help="PEM bundle of the CA(s) that signed the ZooKeeper servers' certificates.",
    ),
    cfg.StrOpt(
        "tls_cert_file",
        help="PEM client certificate, for servers that ask for one (ssl.clientAuth).",
    ),
    cfg.StrOpt(
        "tls_key_file",
        help="PEM private key of tls_cert_file (mode 0600 or 0640).",
    ),
    cfg.BoolOpt(
        "tls_check_hostname",
        default=True,
        help="Check that the server certificate names the host of backend_url.",
    ),
    cfg.BoolOpt(
        "insecure",
        default=False,
        help="TEST BEDS ONLY. Allow running without credentials (every node open to "
        "anyone, so any client that reaches ZooKeeper can get a healthy host fenced) "
        "and/or without TLS. The daemons log a warning at every start.",
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
