"""[notifications] options: how hard the controller tries to deliver.

The bus itself is configured by oslo.messaging's own options, which
``register_opts`` registers too so that they are read and checked like ours:
``[DEFAULT] transport_url`` (or ``[oslo_messaging_notifications]
transport_url`` for a separate notification bus) and
``[oslo_messaging_notifications] driver`` (``messagingv2`` to enable) and
``topics``. Only the processes that use the bus pay for importing
oslo.messaging: ``bus_settings()`` registers its options, not
``register_opts()`` (the agent never imports it). oslo-config-generator
lists them through the ``oslo.messaging`` namespace
(etc/instanceha/instanceha-config-generator.conf).
"""

from oslo_config import cfg

from instanceha import exceptions
from instanceha.notify.outbox import DeliveryPolicy

GROUP = "notifications"
OSLO_GROUPS = ("oslo_messaging_notifications",)

group = cfg.OptGroup(GROUP, title="Notifications",
                     help="Delivery of failure notifications on the notification bus.")

opts = [
    cfg.FloatOpt(
        "delivery_deadline",
        default=600.0,
        min=1.0,
        max=86400.0,
        help="How long the controller keeps retrying one notification while the "
        "bus is unreachable, in seconds from when the event happened. After that "
        "the notification is logged as lost and counted.",
    ),
    cfg.FloatOpt(
        "retry_interval",
        default=0.2,
        min=0.01,
        max=60.0,
        help="Wait after the first failed delivery, in seconds; doubles after each "
        "further failure up to retry_max_interval.",
    ),
    cfg.FloatOpt(
        "retry_max_interval",
        default=5.0,
        min=0.1,
        max=600.0,
        help="Longest wait between two delivery attempts, in seconds.",
    ),
    cfg.IntOpt(
        "max_pending",
        default=10000,
        min=1,
        max=1000000,
        help="Largest number of notifications waiting for delivery; beyond it new "
        "ones are logged as lost and counted. Emitting never blocks recovery.",
    ),
    cfg.FloatOpt(
        "shutdown_timeout",
        default=5.0,
        min=0.0,
        max=300.0,
        help="On shutdown, how long pending notifications may still be delivered, "
        "in seconds.",
    ),
]


def _oslo_opts():
    from oslo_messaging import opts as om_opts

    return [(g, o) for g, o in om_opts.list_opts() if g in OSLO_GROUPS] + [
        (None, [o for g, group_opts in om_opts.list_opts() if g is None
                for o in group_opts if o.dest == "transport_url"])]


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def register_oslo_messaging_opts(conf):
    """oslo.messaging's transport_url and [oslo_messaging_notifications]
    (the same options oslo.messaging registers when it builds a transport)."""
    for oslo_group, oslo_opts in _oslo_opts():
        conf.register_opts(oslo_opts, group=oslo_group)


def list_opts():
    return {group: opts}


def delivery_policy(conf) -> DeliveryPolicy:
    g = conf[GROUP]
    if g.retry_max_interval < g.retry_interval:
        raise exceptions.ConfigError(
            group=GROUP, option="retry_max_interval", file=", ".join(conf.config_file) or "-",
            reason=f"{g.retry_max_interval} s is shorter than [{GROUP}] retry_interval "
            f"{g.retry_interval} s")
    return DeliveryPolicy(deadline=g.delivery_deadline, retry_interval=g.retry_interval,
                          retry_max_interval=g.retry_max_interval, max_pending=g.max_pending,
                          close_timeout=g.shutdown_timeout)


def bus_settings(conf, role: str = "controller"):
    """``publisher_id`` names this node: ``instanceha-controller.<host>``."""
    from instanceha.notify.bus import BusSettings

    register_oslo_messaging_opts(conf)
    n = conf.oslo_messaging_notifications
    return BusSettings(drivers=tuple(n.driver), topics=tuple(n.topics),
                       publisher_id=f"instanceha-{role}.{conf.host}")
