"""[DEFAULT] options of instanceha."""

import socket

from oslo_config import cfg

GROUP = "DEFAULT"

opts = [
    cfg.HostAddressOpt(
        "host",
        default=socket.gethostname(),
        sample_default="<hostname>",
        help="Name of this node. On a compute node it must equal nova-compute's "
        "[DEFAULT] host: the agent joins the cluster under this name and the "
        "controller fences and evacuates the host by it. On a controller it "
        "names this controller in elections, logs and notifications.",
    ),
]


def register_opts(conf):
    conf.register_opts(opts)


def list_opts():
    return {GROUP: opts}
