"""The optional parts of the controller, each built from its options or
left out with a warning saying what is then missing: the second source of
liveness, Nova's aggregates for the guard, failover capacity, the guest
actuator, and the notifications of a safety hold."""

from __future__ import annotations

import typing

from oslo_log import log as logging

from instanceha.clock import SYSTEM
from instanceha.conf import policy
from instanceha.coordination import Coordinator

LOG = logging.getLogger(__name__)
CAPACITY_EVENTS = ("instance.create.end", "instance.delete.end", "instance.resize_confirm.end",
                   "instance.shelve_offload.end", "instance.unshelve.end",
                   "instance.live_migration_post.end", "instance.restore.end")
"""Nova's notifications after which the capacity model reads sooner."""


def second_source(conf, nova, closers):
    """The second source of liveness ([detection] second_source): a probe of each
    host's management address, read from Nova's hypervisors (None without Nova:
    a host whose agent dies is then fenced on that alone)."""
    d = conf.detection
    if d.second_source == "none":
        LOG.warning("[detection] second_source = none: a host whose agent alone dies is "
                    "fenced like a dead host")
        return None
    if nova is None:
        LOG.warning("no Nova: no second source of liveness (the hosts' management addresses "
                    "come from Nova's hypervisors); a host whose agent alone dies is fenced "
                    "like a dead host")
        return None
    from instanceha.controller.host_probe import AddressProbe, HostAddresses, ProbeSettings

    addresses = HostAddresses(nova.host_addresses)
    addresses("")  # the first read starts now, in the background
    probe = AddressProbe(addresses, ProbeSettings(
        port=d.probe_port, timeout=d.probe_timeout, interval=d.probe_interval,
        max_in_flight=d.probe_max_in_flight))
    closers.append(probe.close)
    LOG.info("second source of liveness: a host whose agent looks dead is probed on its "
             "management address (Nova's hypervisor host_ip), TCP port %d, %.2f s to answer",
             d.probe_port, d.probe_timeout)
    return probe


def aggregate_cache(conf, nova, closers):
    """Nova's host aggregates for the guard's per-aggregate limits, read in the
    background (None without Nova: the cluster-wide limits only)."""
    if nova is None:
        LOG.warning("no Nova: the mass-failure guard applies its cluster-wide limits "
                    "only, not the per-aggregate ones")
        return None
    from instanceha.controller.aggregates import AggregateCache

    cache = AggregateCache(nova.host_aggregates, refresh=conf.controller.aggregates_refresh)
    closers.append(cache.close)
    return cache


def capacity(conf, recovery, closers):
    """The failover capacity monitor on the recovery actuator's Nova (None
    without Nova or with [capacity] enabled = false)."""
    settings = policy.capacity_settings(conf)
    priority = policy.default_priority(conf)
    if recovery is None:
        return None
    actuator, nova = recovery, recovery.nova
    from instanceha.controller.capacity_dispatch import Dispatcher, Throttle

    throttle = Throttle(settings.max_concurrent_evacuations, settings.max_evacuations_per_host)
    if not settings.enabled:
        LOG.warning("[capacity] enabled = false: failover coverage is not computed; "
                    "evacuations go in priority order without a planned target")
        actuator.ctx.dispatcher = Dispatcher(None, throttle, default_priority=priority)
        return None
    from instanceha.compute.capacity_reads import CapacityReads
    from instanceha.controller.capacity import CapacityMonitor
    from instanceha.controller.capacity_reader import ModelReader, ReaderSettings

    reader = ModelReader(
        CapacityReads(nova),
        ReaderSettings(default_recovery=policy.default_recovery(conf),
                       default_priority=priority,
                       failure_domain_key=conf.capacity.failure_domain_key),
        services=lambda: actuator.nova_view.services, phases=actuator.ctx.phases)
    monitor = CapacityMonitor(reader, settings,
                              on_change=_coverage_notifier(actuator, conf.controller.dry_run))
    feed = actuator.nova_events
    if feed is not None:
        # what changes room outside our own evacuations (those count as load
        # on their target until the next read anyway): not rebuild.*, so that a
        # recovery's own notifications do not make reads within its API budget
        def on_end(event_type: str) -> None:
            if event_type.startswith(CAPACITY_EVENTS):
                monitor.poke()

        feed.on_end = on_end
    actuator.ctx.dispatcher = Dispatcher(monitor, throttle, settings.plan_targets,
                                         settings.defer_without_room, priority)
    actuator.ctx.dispatcher.groups_read = reader.reads.server_groups
    closers.insert(0, monitor.close)
    c = settings.coverage
    LOG.info("failover capacity: tolerance %s, read every %.0f s; evacuations %s, at most "
             "%d at once, %d per target host", c.tolerance.value if c.tolerance.value ==
             "domain" else f"{c.hosts} host(s)", settings.refresh_interval,
             "to planned targets" if settings.plan_targets else "without planned targets",
             settings.max_concurrent_evacuations, settings.max_evacuations_per_host)
    return monitor


def _coverage_notifier(actuator, dry_run: bool):
    """instanceha.capacity.changed on the bus when coverage flips."""
    notifier = actuator.notifier
    if notifier is None:
        return None
    from instanceha.controller.capacity_report import change_event

    def on_change(coverage, was, read_at: float) -> None:
        try:
            notifier.emit(change_event(coverage, was, dry_run, change_id=f"{read_at:.0f}"))
        except ValueError as e:
            LOG.error("capacity notification not built: %s", e)

    return on_change


def guests(conf, coordinator: Coordinator, actuator, closers):
    """The guest actuator: the recovery actuator's Nova, bus and journal (None without
    Nova: no recovery actuator)."""
    if actuator is None or actuator.nova is None:
        LOG.warning("no Nova: guest failures reported by the agents are not handled")
        return None
    from instanceha.controller.guests import GuestActuator, GuestActuatorSettings
    from instanceha.engine.guest import GuestSettings
    from instanceha.engine.instance_policy import GuestPolicy

    c = conf.guest
    settings = GuestActuatorSettings(
        name=conf.host,
        # the option's choices are GuestPolicy's values: parse never returns None here
        default_policy=typing.cast(GuestPolicy, GuestPolicy.parse(c.default_policy)),
        guest=GuestSettings(max_restarts=c.max_restarts, window=c.restart_window,
                            task_state_wait=c.task_state_wait, coalesce=c.coalesce),
        dry_run=conf.controller.dry_run)
    guests = GuestActuator(coordinator, actuator.nova, settings, notifier=actuator.notifier,
                           events=actuator.events, journal=actuator.journal)
    closers.insert(0, guests.close)
    LOG.info("guest failures: default policy %s, at most %d restart(s) per instance within "
             "%.0f s", c.default_policy, c.max_restarts, c.restart_window)
    return guests


def hold_notifier(notifier, dry_run: bool):
    """A safety hold goes on the bus too (the operators' and VNF managers' alert):
    the first limit exceeded is the payload's rule, limit and observed value."""
    if notifier is None:
        return None
    from instanceha.notify import events

    def on_hold(state, guard_policy) -> None:
        first = state.breaches[0] if state.breaches else None
        try:
            notifier.emit(events.safety_hold(
                rule=first.rule if first else "mass-failure", reason=state.reason,
                hosts=sorted(state.dead),
                limit=first.limit if first else guard_policy.max_failed_hosts,
                observed=first.observed if first else len(state.dead), dry_run=dry_run,
                hold_id=f"{SYSTEM.wall():.3f}"))  # when the hold began: one key per hold
        except ValueError as e:
            LOG.error("safety hold notification not built: %s", e)

    return on_hold
