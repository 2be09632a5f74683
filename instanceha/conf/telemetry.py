"""[telemetry] options: the /metrics, /healthz and /readyz endpoint."""

from oslo_config import cfg

GROUP = "telemetry"

group = cfg.OptGroup(GROUP, title="Telemetry",
                     help="Prometheus metrics and health endpoints of the daemons.")

opts = [
    cfg.BoolOpt("enabled", default=True, help="Serve /metrics, /healthz and /readyz."),
    cfg.HostAddressOpt(
        "bind_host", default="127.0.0.1",
        help="Address the endpoint listens on. Loopback by default; metrics name hosts "
        "but never carry secrets."),
    cfg.PortOpt("controller_port", default=9841,
                help="Port of instanceha-controller's endpoint (0: any free port)."),
    cfg.PortOpt("agent_port", default=9842,
                help="Port of instanceha-agent's endpoint (0: any free port)."),
    cfg.FloatOpt(
        "stall_after", default=10.0, min=1.0, max=600.0,
        help="/healthz turns 503 when the main loop has not completed an iteration for "
        "this many seconds."),
]


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def list_opts():
    return {group: opts}
