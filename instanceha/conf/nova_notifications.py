"""[nova_notifications] options: Nova's own word that an evacuation ended.

With Nova's versioned notifications enabled (in nova.conf:
``[notifications] notification_format = versioned`` or ``both``, and
``[oslo_messaging_notifications] driver = messagingv2``), the leading
controller listens to them and checks an evacuation the moment Nova reports
the instance rebuilt (``instance.rebuild.end``) or failed, instead of at its
next read. Without them, the reads alone (``[nova] poll_initial_interval``
growing to ``poll_interval``): nothing depends on the notifications.

Only the leader consumes, from one queue named ``pool`` bound to ``topic`` on
Nova's ``exchange``; the queue lives in the broker while no controller
leads, so bound its length with a RabbitMQ policy if the controllers may all
be stopped for long (for example ``rabbitmqctl set_policy instanceha-nova
'^instanceha-nova-events$' '{"max-length":10000}' --apply-to queues``).
"""

from oslo_config import cfg

GROUP = "nova_notifications"

group = cfg.OptGroup(GROUP, title="Nova's notifications",
                     help="Learning from Nova's versioned notifications when an "
                     "evacuation ended.")

opts = [
    cfg.BoolOpt(
        "enabled",
        default=True,
        help="Listen to Nova's versioned notifications while leading, to check an "
        "evacuation as soon as Nova reports it ended. Without them (Nova does not emit "
        "them, or the bus is unreachable) evacuations are checked by reading Nova; "
        "with no bus configured at all (neither transport_url here nor [DEFAULT] "
        "transport_url) nothing is started.",
    ),
    cfg.StrOpt(
        "transport_url",
        secret=True,
        help="The bus Nova sends its notifications to, if it is not [DEFAULT] "
        "transport_url (nova.conf's [oslo_messaging_notifications] transport_url). "
        "Never logged.",
    ),
    cfg.StrOpt(
        "exchange",
        default="nova",
        help="The exchange Nova notifies on (nova.conf's [DEFAULT] control_exchange).",
    ),
    cfg.StrOpt(
        "topic",
        default="versioned_notifications",
        help="The topic of Nova's versioned notifications (nova.conf's [notifications] "
        "versioned_notifications_topics).",
    ),
    cfg.BoolOpt(
        "amqp_durable_queues",
        default=False,
        help="Declare the queue on Nova's exchange durable. Must match nova.conf's "
        "[oslo_messaging_rabbit] amqp_durable_queues (RabbitMQ refuses to declare one "
        "exchange both ways); instanceha's own [oslo_messaging_rabbit] setting, for "
        "its notifications, does not apply here.",
    ),
    cfg.StrOpt(
        "pool",
        default="instanceha-nova-events",
        help="The queue the leading controller reads Nova's notifications from (one "
        "for all controllers: only the leader reads it).",
    ),
]


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)


def list_opts():
    return {group: opts}


def listener_conf(conf):
    """A copy of ``conf``'s oslo.messaging options for the transport that reads
    Nova's notifications, with ``amqp_durable_queues`` as this group says
    (every other option, TLS and heartbeats included, as the operator set it)."""
    from oslo_messaging import opts as om_opts

    copy = cfg.ConfigOpts()
    copy([], project="instanceha", default_config_files=[], default_config_dirs=[])
    for group_name, group_opts in om_opts.list_opts():
        conf.register_opts(group_opts, group=group_name)
        copy.register_opts(group_opts, group=group_name)
        source = conf if group_name is None else conf[group_name]
        for opt in group_opts:
            value = source[opt.dest]
            if value is not None:
                copy.set_override(opt.dest, value, group=group_name)
    copy.set_override("amqp_durable_queues", conf[GROUP].amqp_durable_queues,
                      group="oslo_messaging_rabbit")
    return copy
