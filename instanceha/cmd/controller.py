"""instanceha-controller: detect failed hosts; the leader hands them to fencing."""

from __future__ import annotations

import sys

from oslo_log import log as logging

from instanceha import coordination, exceptions
from instanceha.cmd import common, sdnotify
from instanceha.conf import policy
from instanceha.controller.executor import LogOnlyActuator
from instanceha.controller.metrics import ControllerMetrics
from instanceha.controller.service import ControllerService, ControllerSettings

LOG = logging.getLogger(__name__)
PROG = "instanceha-controller"


def build(conf) -> ControllerService:
    detection = policy.detection_policy(conf)
    policy.check_backend(conf)
    c = conf.coordination
    coordinator = coordination.get_coordinator(
        c.backend_url,
        session_timeout=c.session_timeout,
        connect_timeout=c.connect_timeout,
        reconnect_max_delay=c.reconnect_max_delay,
        root_path=c.root_path,
    )
    settings = ControllerSettings(
        name=conf.host,
        policy=detection,
        tick_interval=conf.detection.tick_interval,
        session_timeout=c.session_timeout,
        reconnect_max_delay=c.reconnect_max_delay,
        guard=policy.guard_policy(conf),
        dry_run=conf.controller.dry_run,
    )
    return ControllerService(coordinator, settings, LogOnlyActuator())


def main(argv=None) -> int:
    conf = common.make_conf()
    common.load(conf, sys.argv[1:] if argv is None else argv, PROG)
    service = common.build_or_refuse(PROG, build, conf)
    common.on_stop_signals(lambda name: service.stopping.set())
    LOG.info("%s starting as %s", PROG, conf.host)
    metrics = ControllerMetrics(service)
    service.on_transition = metrics.on_transition

    def ready():
        rec = service.reconciler
        ok = rec is not None and rec.last_snapshot is not None \
            and rec.last_snapshot.connected_for > 0
        return ok, "observing" if ok else "not connected to the coordinator"

    telemetry = common.start_telemetry(
        conf, conf.telemetry.controller_port, metrics.registry,
        common.loop_health(lambda: service.last_iteration, service.clock,
                           conf.telemetry.stall_after), ready)
    sd = sdnotify.Notifier()
    ready = []

    def on_iteration():
        if not ready and service.reconciler is not None:
            ready.append(True)
            sd.ready(f"observing as {conf.host}")
        sd.watchdog()

    rejected = None
    try:
        service.run(on_iteration)
    except exceptions.SessionTimeoutRejected as e:
        rejected = e
    finally:
        sd.stopping()
        service.shutdown()
        if telemetry is not None:
            telemetry.stop()
    if rejected is not None:
        common.refuse(PROG, policy.session_timeout_error(conf, rejected))
    return 0


if __name__ == "__main__":
    sys.exit(main())
