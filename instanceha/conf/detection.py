"""[detection] options: how the controller decides that a host failed."""

from oslo_config import cfg

GROUP = "detection"

group = cfg.OptGroup(
    GROUP,
    title="Failure detection",
    help="Windows and intervals of the controller's failure detector. All times "
    "are measured on the controller's own monotonic clock.",
)

opts = [
    cfg.FloatOpt(
        "heartbeat_stale_after",
        default=1.5,
        min=0.1,
        max=300.0,
        help="A host without a sign of life for longer than this, in seconds, is "
        "suspect; together with the loss of its coordinator membership it is "
        "failed. A sign of life is the live session (an expired session was "
        "silent for its session timeout), and the agent's loop watchdog reports a "
        "main loop stalled past this. Must be longer than [agent] "
        "heartbeat_interval (3 intervals recommended). The agents read it too.",
    ),
    cfg.FloatOpt(
        "hung_after",
        default=2.0,
        min=0.2,
        max=3600.0,
        help="A host whose membership is still alive but without a sign of life for "
        "longer than this, in seconds, is failed: its agent (or the host) is hung "
        "while its coordinator session lives on. The controller counts it from "
        "the stall its agent's watchdog reported, and the watchdog itself ends its "
        "session when the main loop stalls past "
        "hung_after + [agent] heartbeat_interval. Must be longer than "
        "heartbeat_stale_after, and than [agent] heartbeat_interval + 2/3 x "
        "[coordination] session_timeout (how late a leader cut off from "
        "ZooKeeper may notice it; see the configuration guide). The agents read "
        "it too.",
    ),
    cfg.FloatOpt(
        "reconnect_grace",
        default=None,
        min=0.0,
        max=300.0,
        help="After the controller's own coordinator session connects or "
        "reconnects, no host is declared failed until this many seconds have "
        "passed, in addition to one heartbeat_stale_after window that always "
        "applies. It must cover the agents' own reconnection after a coordinator "
        "outage (their sessions may expire while their clients back off, and a "
        "live host then looks dead until it re-joins). Unset: 1.2 x [coordination] "
        "reconnect_max_delay + [agent] heartbeat_interval (6.5 s with the "
        "defaults), which assumes the agents use the same reconnect_max_delay; "
        "set it when they use a longer one.",
    ),
    cfg.FloatOpt(
        "tick_interval",
        default=0.2,
        min=0.01,
        max=60.0,
        help="Interval between two reconciliation ticks of the controller "
        "(observe every host, decide, act), in seconds.",
    ),
    cfg.StrOpt(
        "second_source",
        default="probe",
        choices=[
            ("probe", "a TCP probe of the host's management address (Nova's hypervisor "
             "host_ip), from the controller"),
            ("none", "none: a host whose agent is dead is fenced (the behaviour before)"),
        ],
        help="The source of liveness, independent of the agent process, that the "
        "controller asks before it fails a host whose agent looks dead (membership "
        "lost, or main loop silent): while the host answers it is AGENT_DOWN ('agent "
        "dead, host alive', an alert), never fenced; a host that does not answer within "
        "probe_timeout, or whose nova-compute Nova reports down, is failed. Needs Nova "
        "(the addresses); a host with no address known is judged by its agent alone.",
    ),
    cfg.PortOpt(
        "probe_port",
        default=22,
        help="The TCP port probed on each host's management address. Accepted (SYN-ACK) "
        "or refused (RST) both prove the host's kernel answers; choose a port no "
        "firewall on the way drops (22: sshd) and no middlebox answers for the host.",
    ),
    cfg.FloatOpt(
        "probe_timeout",
        default=0.5,
        min=0.05,
        max=10.0,
        help="How long a host has to answer the probe, in seconds (3 connections are "
        "spread over it: one lost packet is no verdict). A dead host is failed this "
        "much later than its agent's loss alone would fail it; up to [agent] "
        "heartbeat_interval + tick_interval (the mass-failure guard's wait for "
        "companions, 0.7 s) this costs its fence no time.",
    ),
    cfg.FloatOpt(
        "probe_interval",
        default=1.0,
        min=0.1,
        max=60.0,
        help="How often a host held as 'agent dead, host alive' is probed again, in "
        "seconds: a host that stops answering is failed within probe_interval + "
        "probe_timeout.",
    ),
    cfg.IntOpt(
        "probe_max_in_flight",
        default=256,
        min=1,
        max=65536,
        help="The number of probe connections open at the same time at most (a mass "
        "failure queues the rest).",
    ),
]


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def list_opts():
    return {group: opts}
