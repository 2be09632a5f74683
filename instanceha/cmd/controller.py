"""instanceha-controller: detect failed hosts; the leader hands them to fencing."""

from __future__ import annotations

import sys
import threading
import typing
from collections.abc import Callable

from oslo_log import log as logging

from instanceha import exceptions
from instanceha.cmd import common, sdnotify
from instanceha.cmd import controller_parts as parts
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
    aggregates = parts.aggregate_cache(conf, recovery.nova if recovery else None, closers)
    service = ControllerService(coordinator, settings, actuator,
                                nova_states=actuator.nova_up,
                                on_hold=parts.hold_notifier(recovery.notifier if recovery else None,
                                                      settings.dry_run),
                                aggregates=aggregates,
                                guests=parts.guests(conf, coordinator, recovery, closers),
                                second_source=parts.second_source(
                                    conf, recovery.nova if recovery else None, closers),
                                alerts=AgentDownAlerts(recovery.journal)
                                if recovery is not None and recovery.journal is not None
                                else None,
                                provisioner=_provisioner(coordinator, recovery),
                                tampering=AlertJournal(recovery.journal if recovery else None),
                                capacity=parts.capacity(conf, recovery, closers))
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


def _names_a_broker(url: str | None) -> bool:
    """Does this transport URL name a host? (oslo.messaging's default,
    ``rabbit://``, names none: it means guest@localhost.)"""
    from urllib.parse import urlsplit

    if not url:
        return False
    netloc = urlsplit(url).netloc
    return bool(netloc.rpartition("@")[2].strip(","))


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
    if not _names_a_broker(c.transport_url or bus.transport_url):
        # oslo.messaging would try rabbit://guest@localhost:5672 for ever, and a
        # listener that never connects also kept the controller from stopping
        LOG.warning("[nova_notifications] enabled but no bus configured (neither its "
                    "transport_url nor [DEFAULT] transport_url): not listening; evacuations "
                    "are checked by reading Nova")
        return None

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
    service.hooks.on_transition = metrics.on_transition
    recovery = _recovery(service.handler)
    if recovery is not None:  # the recovery actuator reports to them
        recovery.metrics = metrics
        metrics.notifier = recovery.notifier
        metrics.journal = recovery.journal
        metrics.nova_events = recovery.nova_events
        metrics.api_calls = recovery.calls
    if service.duties.guests is not None:
        service.duties.guests.metrics = metrics
    previous_hold = service.hooks.on_hold

    def on_hold(state, guard_policy):
        metrics.safety_holds.inc()
        if previous_hold is not None:
            previous_hold(state, guard_policy)

    service.hooks.on_hold = on_hold

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
