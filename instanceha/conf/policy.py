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
        return "(unknown source)"
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


def coordinator(conf: cfg.ConfigOpts):
    """The coordinator ``[coordination]`` describes (built, not started)."""
    from instanceha import coordination

    check_backend(conf)
    c = conf.coordination
    return coordination.get_coordinator(
        c.backend_url,
        session_timeout=c.session_timeout,
        connect_timeout=c.connect_timeout,
        reconnect_max_delay=c.reconnect_max_delay,
        root_path=c.root_path,
        consistency_interval=c.consistency_interval,
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
