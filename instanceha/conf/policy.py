"""The edge: turn a parsed ConfigOpts into frozen settings, or refuse to start.

Cross-option checks live here (a single option's bounds are oslo.config's
job). Every error names the option, its group and the file that set it.
"""

from __future__ import annotations

from oslo_config import cfg

from instanceha import exceptions
from instanceha.engine.detection import check_cut_off_leader, default_reconnect_grace
from instanceha.engine.guard import GuardPolicy
from instanceha.engine.model import DetectionPolicy, PolicyError

# engine policy field -> (group, option)
_POLICY_OPTS = {
    "heartbeat_interval": ("agent", "heartbeat_interval"),
    "heartbeat_stale_after": ("detection", "heartbeat_stale_after"),
    "hung_after": ("detection", "hung_after"),
    "reconnect_grace": ("detection", "reconnect_grace"),
}
# every field a PolicyError may name
_FIELD_OPTS = {**_POLICY_OPTS, "session_timeout": ("coordination", "session_timeout")}


def where(conf: cfg.ConfigOpts, group: str, name: str) -> str:
    """The file (or other source) that set an option."""
    try:
        loc = conf.get_location(name, None if group == "DEFAULT" else group)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return "(unregistered option)"
    if loc is None:
        return "(not set)"
    if loc.location is cfg.Locations.opt_default:
        return "(default value)"
    if loc.location is cfg.Locations.command_line:
        return "(command line)"
    if loc.location is cfg.Locations.environment:
        return "(environment)"
    return loc.detail or "(unknown source)"


def config_error(conf, group: str, option: str, reason: str) -> exceptions.ConfigError:
    return exceptions.ConfigError(
        group=group, option=option, file=where(conf, group, option), reason=reason
    )


def detection_policy(conf: cfg.ConfigOpts) -> DetectionPolicy:
    values = {
        field: conf[group][opt] if group != "DEFAULT" else conf[opt]
        for field, (group, opt) in _POLICY_OPTS.items()
    }
    if values["reconnect_grace"] is None:
        values["reconnect_grace"] = default_reconnect_grace(
            conf.coordination.reconnect_max_delay, values["heartbeat_interval"])
    try:
        result = DetectionPolicy(**values)
        check_cut_off_leader(result.hung_after, result.heartbeat_interval,
                             conf.coordination.session_timeout)
    except PolicyError as e:
        group, opt = _FIELD_OPTS[e.field]
        reason = e.reason
        if e.other:
            og, oo = _FIELD_OPTS[e.other]
            reason += f" (compare [{og}] {oo} in {where(conf, og, oo)})"
        raise config_error(conf, group, opt, reason)
    return result


def check_backend(conf: cfg.ConfigOpts) -> None:
    from instanceha import coordination

    try:
        coordination.backend_class(conf.coordination.backend_url)
    except exceptions.UnknownBackend as e:
        raise config_error(conf, "coordination", "backend_url", str(e))


def coordination_security(conf: cfg.ConfigOpts, role: str | None = None):
    """(role, credentials, TLS settings) of ``[coordination]``, or ConfigError
    naming the option and file at fault. ``role``: what the caller is
    (controller, agent); None: whatever the credentials file says (the CLI), an
    operator without one. Refuses to run open (no credentials, or no TLS)
    unless ``insecure`` is set."""
    import os
    import stat as stat_mod

    from instanceha.coordination import credentials as cr
    from instanceha.coordination.zk_session import TlsSettings

    c = conf.coordination
    creds = None
    if c.credentials_file:
        try:
            creds = cr.load(c.credentials_file)
        except exceptions.CredentialsError as e:
            raise config_error(conf, "coordination", "credentials_file", str(e)) from None
        if role is not None and creds.role != role:
            raise config_error(conf, "coordination", "credentials_file",
                               f"{c.credentials_file} holds the credentials of role "
                               f"{creds.role}; this daemon needs role {role}")
        if creds.role == cr.AGENT and creds.host != conf.host:
            raise config_error(conf, "coordination", "credentials_file",
                               f"{c.credentials_file} is for host {creds.host}, this agent "
                               f"is host {conf.host} ([DEFAULT] host in "
                               f"{where(conf, 'DEFAULT', 'host')})")
    elif not c.insecure:
        raise config_error(conf, "coordination", "credentials_file",
                           "not set: without credentials anyone who reaches ZooKeeper can "
                           "get a healthy host fenced. Make them with 'instanceha "
                           "coordination credentials' (see the security guide), or set "
                           "insecure = true on a test bed")
    tls = None
    if c.tls:
        if not c.tls_ca_file:
            raise config_error(conf, "coordination", "tls_ca_file",
                               "not set while tls = true: name the CA bundle that signed the "
                               "ZooKeeper servers' certificates")
        for option in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = c[option]
            if path and not os.access(path, os.R_OK):
                raise config_error(conf, "coordination", option, f"{path} cannot be read")
        if bool(c.tls_cert_file) != bool(c.tls_key_file):
            raise config_error(conf, "coordination", "tls_key_file",
                               "tls_cert_file and tls_key_file go together")
        if c.tls_key_file and os.stat(c.tls_key_file).st_mode & 0o007:
            mode = stat_mod.S_IMODE(os.stat(c.tls_key_file).st_mode)
            raise config_error(conf, "coordination", "tls_key_file",
                               f"{c.tls_key_file} is a private key that others may access "
                               f"(mode {mode:04o}): chmod o-rwx")
        tls = TlsSettings(ca_file=c.tls_ca_file, cert_file=c.tls_cert_file,
                          key_file=c.tls_key_file, check_hostname=c.tls_check_hostname)
    elif not c.insecure:
        raise config_error(conf, "coordination", "tls",
                           "false: the credentials would cross the network in clear. Use "
                           "ZooKeeper's secureClientPort with tls_ca_file, or set insecure "
                           "= true on a test bed")
    resolved = role or (creds.role if creds is not None else cr.OPERATOR)
    return resolved, creds, tls


def insecure_warning(conf: cfg.ConfigOpts) -> str | None:
    """What a daemon running with ``insecure`` logs at start (None: secure)."""
    c = conf.coordination
    missing = [w for w, off in (("authentication and ACLs", not c.credentials_file),
                                ("TLS", not c.tls)) if off]
    if not missing:
        return None
    return (f"INSECURE coordination ([coordination] insecure = true): no {' and no '.join(missing)}"
            "; anyone who reaches ZooKeeper can get a healthy host fenced. Test beds only.")


def coordinator(conf: cfg.ConfigOpts, role: str | None = None):
    """The coordinator ``[coordination]`` describes (built, not started)."""
    from instanceha import coordination

    check_backend(conf)
    resolved, creds, tls = coordination_security(conf, role)
    c = conf.coordination
    return coordination.get_coordinator(
        c.backend_url,
        session_timeout=c.session_timeout,
        connect_timeout=c.connect_timeout,
        reconnect_max_delay=c.reconnect_max_delay,
        root_path=c.root_path,
        consistency_interval=c.consistency_interval,
        role=resolved, creds=creds, tls=tls,
    )


def session_timeout_error(conf, e: exceptions.SessionTimeoutRejected) -> exceptions.ConfigError:
    return config_error(
        conf,
        "coordination",
        "session_timeout",
        f"{e}; choose a value the server grants (or change its tickTime/"
        f"minSessionTimeout/maxSessionTimeout)",
    )


def guard_policy(conf: cfg.ConfigOpts) -> GuardPolicy:
    c = conf.controller
    return GuardPolicy(
        max_failed_hosts=c.max_failed_hosts,
        max_failed_percent=c.max_failed_percent,
        max_fences_per_tick=c.max_fences_per_tick,
        stable_after=c.guard_stable_after,
        max_failed_hosts_per_aggregate=c.max_failed_hosts_per_aggregate,
        max_failed_percent_per_aggregate=c.max_failed_percent_per_aggregate,
        aggregate_min_hosts=c.aggregate_min_hosts,
        max_vanished_per_tick=c.max_vanished_per_tick,
        # hosts cut off at one instant are seen going silent spread over one
        # heartbeat interval, observed at the next tick
        vanish_window=conf.agent.heartbeat_interval + conf.detection.tick_interval,
    )


def recovery_policy(conf: cfg.ConfigOpts):
    from instanceha.engine.recovery import RecoveryPolicy

    c = conf.controller
    return RecoveryPolicy(reenable=c.reenable_after_repair, flap_failures=c.flap_failures,
                          flap_window=c.flap_window)


def journal_retention(conf: cfg.ConfigOpts):
    from instanceha.controller.journal import Retention

    c = conf.controller
    return Retention(keep=c.incident_retention_count,
                     max_age=c.incident_retention_days * 86400.0)


def target_policy(conf: cfg.ConfigOpts):
    """[recovery]: the scheduler, or reserved spare hosts."""
    from instanceha.engine.reserved import Match, Method, TargetPolicy

    c = conf.recovery
    return TargetPolicy(method=Method(c.method), match=Match(c.reserved_match),
                        fallback_to_scheduler=c.reserved_fallback_to_scheduler)


def capacity_settings(conf: cfg.ConfigOpts):
    """[capacity] (and the [recovery] target policy the plan mirrors)."""
    from instanceha.controller.capacity import CapacitySettings
    from instanceha.engine.capacity_coverage import CoveragePolicy, Tolerance
    from instanceha.engine.capacity_plan import PlanPolicy

    c = conf.capacity
    target = target_policy(conf)
    return CapacitySettings(
        enabled=c.enabled, refresh_interval=c.refresh_interval,
        min_interval=min(c.min_interval, c.refresh_interval),
        coverage=CoveragePolicy(
            tolerance=Tolerance(c.tolerance), hosts=c.hosts,
            plan=PlanPolicy(spares=target.reserved, spare_match=target.match,
                            fallback_to_scheduler=target.fallback_to_scheduler)),
        plan_targets=c.plan_targets, defer_without_room=c.defer_without_room,
        max_concurrent_evacuations=c.max_concurrent_evacuations,
        max_evacuations_per_host=c.max_evacuations_per_host)


def default_priority(conf: cfg.ConfigOpts) -> int:
    from instanceha.engine.instance_policy import parse_priority

    value = parse_priority(conf.capacity.default_priority)
    if value is None:
        raise config_error(conf, "capacity", "default_priority",
                           f"{conf.capacity.default_priority!r} is not a priority: use "
                           "lowest, low, medium, high, highest or a number from 0 to 1000")
    return value


def default_recovery(conf: cfg.ConfigOpts):
    """[nova] default_instance_recovery as the engine's enum (its choices are
    the enum's values: oslo.config refused anything else)."""
    from instanceha.engine.instance_policy import Recovery

    value = Recovery.parse(conf.nova.default_instance_recovery)
    if value is None:
        raise config_error(conf, "nova", "default_instance_recovery",
                           f"{conf.nova.default_instance_recovery!r} is not evacuate, notify or "
                           "ignore")
    return value
