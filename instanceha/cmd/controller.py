"""instanceha-controller: detect failed hosts; the leader hands them to fencing."""

from __future__ import annotations

import sys
import threading
import typing
from collections.abc import Callable

from oslo_log import log as logging

from instanceha import exceptions
from instanceha.clock import SYSTEM
from instanceha.cmd import common, sdnotify
from instanceha.conf import policy
from instanceha.controller.agent_alerts import AgentDownAlerts
from instanceha.controller.alerts import AlertJournal
from instanceha.controller.executor import Actuator, LogOnlyActuator
from instanceha.controller.metrics import ControllerMetrics
from instanceha.controller.provision import Provisioner
from instanceha.controller.service import ControllerService, ControllerSettings
from instanceha.coordination import Coordinator

LOG = logging.getLogger(__name__)
PROG = "instanceha-controller"
CAPACITY_EVENTS = ("instance.create.end", "instance.delete.end", "instance.resize_confirm.end",
                   "instance.shelve_offload.end", "instance.unshelve.end",
                   "instance.live_migration_post.end", "instance.restore.end")
"""Nova's notifications after which the capacity model reads sooner."""


def build(conf) -> ControllerService:
    detection = policy.detection_policy(conf)
    c = conf.coordination
    coordinator = policy.coordinator(conf, role="controller")
    settings = ControllerSettings(
        name=conf.host,
        policy=detection,
        tick_interval=conf.detection.tick_interval,
        session_timeout=c.session_timeout,
        reconnect_max_delay=c.reconnect_max_delay,
        guard=policy.guard_policy(conf),
        dry_run=conf.controller.dry_run,
    )
    holder: list[ControllerService] = []

    def snapshot():
        rec = holder[0].reconciler if holder else None
        return rec.last_snapshot if rec is not None else None

    def records():
        snap = snapshot()
        return snap.hosts if snap is not None else {}

    def control():
        snap = snapshot()
        return snap.control if snap is not None else {}

    actuator, closers = build_actuator(conf, coordinator, records, control)
    recovery = _recovery(actuator)
    aggregates = aggregate_cache(conf, recovery.nova if recovery else None, closers)
    service = ControllerService(coordinator, settings, actuator,
                                nova_states=actuator.nova_up,
                                on_hold=hold_notifier(recovery.notifier if recovery else None,
                                                      settings.dry_run),
                                aggregates=aggregates,
                                guests=_guests(conf, coordinator, recovery, closers),
                                second_source=_second_source(
                                    conf, recovery.nova if recovery else None, closers),
                                alerts=AgentDownAlerts(recovery.journal)
                                if recovery is not None and recovery.journal is not None
                                else None,
                                provisioner=_provisioner(coordinator, recovery),
                                tampering=AlertJournal(recovery.journal if recovery else None),
                                capacity=_capacity(conf, recovery, closers))
    service.closers = closers
    holder.append(service)
    return service


def _recovery(actuator: Actuator):
    """The recovery actuator (with Nova, a bus, a journal), or None (log-only)."""
    from instanceha.controller.recovery import RecoveryActuator

    return actuator if isinstance(actuator, RecoveryActuator) else None


def _provisioner(coordinator, recovery):
    """Slots for every host of the fencing inventory and every host Nova knows
    (None without fencing: hosts are provisioned with 'instanceha host provision')."""
    if recovery is None:
        return None

    def desired():
        return set(recovery.fencer.inventory.hosts()) | set(recovery.nova_up())

    return Provisioner(coordinator, desired)


def _second_source(conf, nova, closers):
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


def _capacity(conf, recovery, closers):
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
    from instanceha.controller.capacity import change_event

    def on_change(coverage, was, read_at: float) -> None:
        try:
            notifier.emit(change_event(coverage, was, dry_run, change_id=f"{read_at:.0f}"))
        except ValueError as e:
            LOG.error("capacity notification not built: %s", e)

    return on_change


def _guests(conf, coordinator: Coordinator, actuator, closers):
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


def build_actuator(conf, coordinator: Coordinator, records,
                   control) -> tuple[Actuator, list[Callable[[], object]]]:
    """The recovery actuator when fencing is configured, else the log-only one.

    Fencing without Nova (or Nova without fencing) refuses to start: fencing
    records its durable state in Nova, and Nova is never told to evacuate a
    host that was not fenced."""
    if not conf.fencing.inventory_file:
        LOG.warning("no [fencing] inventory_file: failed hosts are logged, never fenced, "
                    "never evacuated")
        return LogOnlyActuator(), []
    from instanceha import fencing
    from instanceha.compute.calls import ApiCalls
    from instanceha.compute.evacuation import Evacuator
    from instanceha.compute.waiting import CompletionWatch
    from instanceha.conf import fencing as fencing_conf
    from instanceha.conf import notifications as notifications_conf
    from instanceha.conf import nova as nova_conf
    from instanceha.controller.journal import IncidentJournal
    from instanceha.controller.recovery import (
        ActuatorSettings,
        Attestations,
        FailureHistory,
        RecoveryActuator,
    )
    from instanceha.engine.instance_policy import Recovery
    from instanceha.notify import events
    from instanceha.notify import notifier as notifier_mod

    load = fencing_conf.inventory_loader(conf)
    inv = load(conf.fencing.inventory_file)
    fakes = fencing_conf.fake_hosts(inv)
    if fakes:
        LOG.warning("TEST ONLY: [fencing] test_only_allow_fake_driver is set and %d host(s) "
                    "(%s) use the 'fake' fencing driver: they are NEVER powered off; never "
                    "run this in production", len(fakes), ", ".join(fakes[:5]))
    fencer = fencing.Fencer(inv, fencing_conf.fence_policy(conf)).watch(
        conf.fencing.inventory_file, load)
    if not conf.nova.auth_type:
        raise policy.config_error(conf, "nova", "auth_type",
                                  "fencing is configured but Nova is not: set the [nova] "
                                  "keystone credentials (auth_type = password, ...)")
    calls = ApiCalls()
    nova = nova_conf.nova_client(conf)
    nova.recorder = calls
    notifier = notifier_mod.make_notifier(conf, notifications_conf.bus_settings(conf),
                                          notifications_conf.delivery_policy(conf)).start()
    evacuation = nova_conf.evacuation_settings(conf)
    watch = CompletionWatch()
    nova_events = _nova_events(conf, watch)
    settings = ActuatorSettings(
        name=conf.host,
        policy=policy.recovery_policy(conf),
        # the option's choices are Recovery's values: parse never returns None here
        default_recovery=typing.cast(Recovery, Recovery.parse(conf.nova.default_instance_recovery)),
        workers=conf.controller.recovery_workers,
        # every host the guard lets through is fenced at once, never behind a recovery
        fence_workers=policy.guard_policy(conf).max_failed_hosts,
        dry_run=conf.controller.dry_run,
        power_on_after_recovery=conf.fencing.power_on_after_recovery,
        target=policy.target_policy(conf),
    )
    target = settings.target
    LOG.info("recovery: %d host(s) in the fencing inventory %s; default instance recovery "
             "%s; method %s%s%s", len(inv), conf.fencing.inventory_file,
             settings.default_recovery.value, target.method.value,
             f" (match {target.match.value}, fallback to the scheduler "
             f"{'on' if target.fallback_to_scheduler else 'off'})" if target.reserved else "",
             " (DRY-RUN)" if settings.dry_run else "")
    actuator = RecoveryActuator(settings, fencer, nova,
                                lambda n: Evacuator(n, evacuation, watch=watch),
                                notifier=notifier, events=events, nova_events=nova_events,
                                calls=calls,
                                failures=FailureHistory(coordinator, records),
                                attestations=Attestations(coordinator, control),
                                journal=IncidentJournal(coordinator, conf.host,
                                                        policy.journal_retention(conf)))
    return actuator, [actuator.close, fencer.close, notifier.close]


def _nova_events(conf, watch):
    """The feed of Nova's versioned notifications ([nova_notifications]), or None."""
    from instanceha.conf import notifications as notifications_conf
    from instanceha.controller.nova_events import NovaEventFeed

    c = conf.nova_notifications
    if not c.enabled:
        LOG.info("[nova_notifications] disabled: evacuations are checked by reading Nova")
        return None
    notifications_conf.register_oslo_messaging_opts(conf)
    from instanceha.conf import nova_notifications

    bus = nova_notifications.listener_conf(conf)

    def make_listener(on_event):
        from instanceha.notify.listener import Listener

        return Listener(bus, (c.topic,), c.pool,
                        lambda r: on_event(r.event_type, r.payload),
                        event_type_pattern=r"^instance\.", url=c.transport_url,
                        exchange=c.exchange)

    return NovaEventFeed(make_listener, watch)


def main(argv=None) -> int:
    conf = common.make_conf()
    common.load(conf, sys.argv[1:] if argv is None else argv, PROG)
    service = common.build_or_refuse(PROG, build, conf)
    crashed: list[BaseException] = []

    def crash(error: BaseException) -> None:
        crashed.append(error)
        service.stopping.set()

    common.exit_on_thread_crash(PROG, stop=crash)
    reload_requested = threading.Event()
    common.on_stop_signals(lambda name: service.stopping.set(), reload=reload_requested.set)
    LOG.info("%s starting as %s", PROG, conf.host)
    insecure = policy.insecure_warning(conf)
    if insecure:
        LOG.warning(insecure)
    metrics = ControllerMetrics(service)
    service.on_transition = metrics.on_transition
    recovery = _recovery(service.handler)
    if recovery is not None:  # the recovery actuator reports to them
        recovery.metrics = metrics
        metrics.notifier = recovery.notifier
        metrics.journal = recovery.journal
        metrics.nova_events = recovery.nova_events
        metrics.api_calls = recovery.calls
    if service.guests is not None:
        service.guests.metrics = metrics
    previous_hold = service.on_hold

    def on_hold(state, guard_policy):
        metrics.safety_holds.inc()
        if previous_hold is not None:
            previous_hold(state, guard_policy)

    service.on_hold = on_hold

    def ready():
        rec = service.reconciler
        ok = rec is not None and rec.last_snapshot is not None \
            and rec.last_snapshot.connected_for > 0
        return ok, "observing" if ok else "not connected to the coordinator"

    telemetry = common.start_telemetry(
        conf, conf.telemetry.controller_port, metrics.registry,
        common.loop_health(lambda: service.last_iteration, service.clock,
                           conf.telemetry.stall_after), ready)
    sd = sdnotify.SystemdNotifier()
    notify = sd.loop_hook(lambda: service.reconciler is not None, f"observing as {conf.host}")

    def on_iteration():
        notify()
        if reload_requested.is_set():  # SIGHUP: the log level, in the loop's thread
            reload_requested.clear()
            common.reload_config(conf, PROG)

    rejected = None
    refused = None
    try:
        service.run(on_iteration)
    except exceptions.SessionTimeoutRejected as e:
        rejected = e
    except exceptions.CoordinationError as e:  # not retryable: the start is refused
        refused = e
    except Exception as e:
        LOG.critical("%s: uncaught %s in the main loop: stopping, then exiting with status %d "
                     "so that it is restarted", PROG, type(e).__name__, common.EXIT_CRASH,
                     exc_info=True)
        crashed.append(e)
    finally:
        sd.stopping()
        service.shutdown()
        for close in service.closers:
            try:
                close()
            except Exception as e:  # shutting down: report, keep closing the rest
                LOG.warning("closing %s failed: %s", getattr(close, "__qualname__", close),
                            type(e).__name__)
        if telemetry is not None:
            telemetry.stop()
    if rejected is not None:
        common.refuse(PROG, policy.session_timeout_error(conf, rejected))
    if refused is not None:
        common.refuse(PROG, refused)
    return common.EXIT_CRASH if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
