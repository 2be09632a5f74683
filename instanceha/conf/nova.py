"""[nova] options: how the controller talks to Nova, and how it evacuates.

Authentication, TLS, timeouts, region and endpoint selection are
keystoneauth's own options (the same names as in nova.conf's [placement] or
[neutron] groups), so the usual ``auth_type = password`` block works::

    [nova]
    auth_type = password
    auth_url = https://keystone.example.com/v3
    username = instanceha
    password = ...
    user_domain_name = Default
    project_name = service
    project_domain_name = Default
    region_name = RegionOne
    valid_interfaces = internal

The account needs Nova's admin rights: it forces services down, lists
servers of all projects and evacuates them. The compute API microversions are
pinned in the code, not configurable: force-down and enable/disable by service
id at 2.53, the migration list at 2.59, evacuate at 2.94 (from 2.95 Nova
leaves an evacuated server SHUTOFF).
"""

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

GROUP = "nova"
SERVICE_TYPE = "compute"

group = cfg.OptGroup(GROUP, title="Nova", help="How instanceha reaches Nova and evacuates.")

opts = [
    cfg.StrOpt(
        "default_instance_recovery",
        default="ignore",
        choices=[
            ("evacuate", "rebuild the instance on another host"),
            ("notify", "only notify the instance's owner"),
            ("ignore", "leave the instance on the failed host"),
        ],
        help="What happens to an instance of a failed host when neither its "
        "server metadata, flavor, image nor host aggregates say (see "
        "doc/source/instance-policy.rst).",
    ),
    cfg.IntOpt(
        "evacuation_concurrency",
        default=32,
        min=1,
        max=256,
        help="The number of evacuations of one host that run at a time. Nova does "
        "the work; the controller only waits for each, so the default lets the "
        "servers of a typical host move together instead of queueing; lower it to "
        "spare a small control plane.",
    ),
    cfg.IntOpt(
        "evacuation_attempts",
        default=3,
        min=1,
        max=10,
        help="The number of times one server's evacuation is tried before it is "
        "reported as failed to recover.",
    ),
    cfg.FloatOpt(
        "evacuation_timeout",
        default=300.0,
        min=10.0,
        max=3600.0,
        help="How long one evacuation attempt may take until its migration is "
        "done and the server is in its final state on another host, in seconds.",
    ),
    cfg.FloatOpt(
        "poll_interval",
        default=2.0,
        min=0.1,
        max=60.0,
        help="Longest wait between two reads of the failed host's running "
        "evacuations (one bulk read of its migration records for all its "
        "servers), in seconds.",
    ),
    cfg.FloatOpt(
        "poll_initial_interval",
        default=0.25,
        min=0.05,
        max=60.0,
        help="First wait between two reads of the failed host's running "
        "evacuations, in seconds; each later wait is half as long again, up to "
        "poll_interval. Nova's versioned notifications about an instance being "
        "evacuated (see [nova_notifications]) start the short waits again.",
    ),
    cfg.FloatOpt(
        "lost_write_grace",
        default=60.0,
        min=1.0,
        max=3600.0,
        help="How long an evacuate request whose answer never came (a timeout) may "
        "still be acted on by Nova, in seconds: its evacuation records are watched "
        "that long before it is sent again (a busy nova-api was seen taking 35 s to act on a "
        "request; sending again meanwhile makes Nova rebuild the server twice).",
    ),
    cfg.FloatOpt(
        "cache_ttl",
        default=30.0,
        min=0.0,
        max=3600.0,
        help="How long the host aggregates and image properties read for the "
        "per-instance policy are reused, in seconds (shared by the recoveries of "
        "several hosts failing together).",
    ),
]


# keystoneauth's own options that instanceha replaces by bounded ones (same
# names, so keystoneauth's loaders read them): a Nova call must never hang the
# controller, and keystoneauth's defaults have no timeout at all
bounded_ks_opts = [
    cfg.FloatOpt("timeout", default=60.0, min=1.0, max=600.0,
                 help="Timeout of one HTTP request to Nova or Keystone, in seconds."),
    cfg.IntOpt("connect_retries", default=3, min=0, max=10,
               help="The number of retries of a request that failed to connect."),
    cfg.FloatOpt("connect_retry_delay", default=0.5, min=0.0, max=60.0,
                 help="Delay before the first retry of a failed connection, doubled "
                 "for each later retry, in seconds."),
    cfg.IntOpt("status_code_retries", default=2, min=0, max=10,
               help="The number of retries of a request answered with 503 (or one of "
               "retriable_status_codes)."),
    cfg.FloatOpt("status_code_retry_delay", default=0.5, min=0.0, max=60.0,
                 help="Delay before the first retry after a retriable status code, "
                 "doubled for each later retry, in seconds."),
]
_REPLACED = {o.dest for o in bounded_ks_opts} | {"version", "min_version", "max_version"}


def _session_opts():
    return [o for o in ks_loading.get_session_conf_options() if o.dest not in _REPLACED]


def _adapter_opts():
    # the microversions are pinned per call; a configured version would fight them
    adapter = [o for o in ks_loading.get_adapter_conf_options(include_deprecated=False)
               if o.dest not in _REPLACED]
    cfg.set_defaults(adapter, service_type=SERVICE_TYPE, valid_interfaces=["internal", "public"])
    return adapter


def register_opts(conf):
    # a fresh OptGroup per ConfigOpts: oslo.config keeps the registered group's
    # options dict, and keystoneauth registers its plugin's options (auth_url,
    # required) into it at load time; a shared module-level group would leak
    # them into every other ConfigOpts of the process
    conf.register_group(cfg.OptGroup(group.name, title=group.title, help=group.help))
    conf.register_opts(opts + bounded_ks_opts, group=group)
    conf.register_opts(_session_opts(), group=group)
    ks_loading.register_auth_conf_options(conf, GROUP)
    conf.register_opts(_adapter_opts(), group=group)


def keystoneauth_opts():
    """keystoneauth's own options in this group, each once."""
    seen, result = set(), []
    for opt in (
        bounded_ks_opts
        + _session_opts()
        + ks_loading.get_auth_common_conf_options()
        + ks_loading.get_auth_plugin_conf_options("password")
        + ks_loading.get_auth_plugin_conf_options("v3applicationcredential")
        + _adapter_opts()
    ):
        if opt.dest not in seen:
            seen.add(opt.dest)
            result.append(opt)
    return result


def list_opts():
    return {group: opts + keystoneauth_opts()}


POOL_SPARE = 8
"""Connections to a Nova or Placement endpoint kept beyond the evacuations in
flight: the read-ahead, the guest actuator, the capacity reads, the refresher."""


def evacuation_settings(conf, group: str = GROUP):
    """[nova]'s evacuation options as the evacuator's frozen settings (the edge)."""
    from instanceha.compute.evacuation import EvacuationSettings

    c = conf[group]
    return EvacuationSettings(
        concurrency=c.evacuation_concurrency, attempts=c.evacuation_attempts,
        timeout=c.evacuation_timeout, poll_interval=c.poll_interval,
        poll_initial=min(c.poll_initial_interval, c.poll_interval),
        lost_write_grace=c.lost_write_grace)


def nova_client(conf, group: str = GROUP):
    """A NovaClient on the keystoneauth session of [nova] (built once, at the
    edge: below it nothing reads oslo.config), or NovaConfigError."""
    from keystoneauth1 import exceptions as ks_exc
    from keystoneauth1 import loading as ks_loading
    from keystoneauth1 import session as ks_session
    from openstack import connection

    from instanceha.compute import exceptions as exc
    from instanceha.compute.nova import NovaClient

    try:
        auth = ks_loading.load_auth_from_conf_options(conf, group)
    except (ks_exc.MissingRequiredOptions, ks_exc.AuthPluginException) as e:
        raise exc.NovaConfigError(operation="loading [nova] auth options", reason=str(e))
    session = ks_loading.load_session_from_conf_options(conf, group, auth=auth)
    c = conf[group]
    # requests keeps 10 connections per host by default: with more evacuations
    # in flight, each one beyond that opened and discarded a connection
    # ("Connection pool is full", seen in the e2e benchmark at 20 servers)
    pool = max(10, c.evacuation_concurrency + POOL_SPARE)
    adapter = ks_session.TCPKeepAliveAdapter(pool_connections=pool, pool_maxsize=pool)
    for scheme in ("https://", "http://"):
        session.mount(scheme, adapter)
    interface = c.valid_interfaces[0] if c.valid_interfaces else None
    conn = connection.Connection(
        session=session, region_name=c.region_name, interface=interface,
        compute_endpoint_override=c.endpoint_override,
        connect_retries=c.connect_retries,
        compute_status_code_retries=c.status_code_retries,
        app_name="instanceha", app_version="1",
    )
    return NovaClient(conn, cache_ttl=c.cache_ttl)
