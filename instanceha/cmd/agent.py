"""instanceha-agent: this compute node's membership, health and liveness."""

from __future__ import annotations

import os
import sys
import threading
import urllib.parse

from oslo_log import log as logging

from instanceha import exceptions
from instanceha.agent import health, session_file
from instanceha.agent.service import Agent, AgentSettings
from instanceha.agent.session_file import SessionFile
from instanceha.cmd import common, sdnotify
from instanceha.conf import policy

LOG = logging.getLogger(__name__)
PROG = "instanceha-agent"
GROUPS = ("default", "coordination", "agent", "detection", "telemetry", "guest")
"""The option modules the agent reads: the others (Nova's keystoneauth options,
the bus) are not even imported, so that a restarted agent resumes its session
sooner (``[agent] session_file``)."""


def build(conf) -> Agent:
    # the agent's interval must fit the detector's windows; its watchdog uses them
    detection = policy.detection_policy(conf)
    c = conf.coordination
    coordinator = policy.coordinator(conf, role="agent")
    settings = AgentSettings(
        host=conf.host,
        heartbeat_interval=conf.agent.heartbeat_interval,
        health_check_interval=conf.agent.health_check_interval,
        reconnect_max_delay=c.reconnect_max_delay,
        stall_report_after=detection.heartbeat_stale_after,
        hung_after=detection.hung_after,
    )
    return Agent(coordinator, settings, health.ProcessProbe(conf.agent.watched_processes),
                 guest_monitor=_guest_monitor(conf, coordinator),
                 session_file=_session_file(conf, coordinator))


def _session_file(conf, coordinator) -> SessionFile | None:
    """Where this agent keeps its session across restarts (None: never resumed)."""
    path = conf.agent.session_file
    if not path:
        LOG.warning("[agent] session_file is empty: a restarted agent opens a new session "
                    "and the controllers see its host's membership vanish")
        return None
    if not os.path.isabs(path):
        raise policy.config_error(conf, "agent", "session_file",
                                  f"{path!r} is not an absolute path")
    servers = urllib.parse.urlsplit(conf.coordination.backend_url).netloc
    store = SessionFile(path, conf.host, servers, conf.coordination.root_path)
    try:
        store.lock()
    except session_file.InUse as e:
        raise policy.config_error(conf, "agent", "session_file", str(e)) from None
    return store


def _guest_monitor(conf, coordinator):
    """The instance monitor, when [guest] monitor is on (refuses without libvirt)."""
    if not conf.guest.monitor:
        return None
    from instanceha.agent.guest_monitor import GuestMonitor

    try:
        import libvirt
    except ImportError as e:
        raise policy.config_error(conf, "guest", "monitor", f"the libvirt python binding is "
                                  f"missing ({e}): install libvirt-python (pip install "
                                  "'instanceha[libvirt]'), or set monitor = false") from None
    g = conf.guest
    monitor = GuestMonitor(g.libvirt_uri, conf.host, coordinator.guest_event_put,
                           libvirt_module=libvirt,
                           reconnect_max_delay=conf.coordination.reconnect_max_delay,
                           keepalive_interval=g.keepalive_interval,
                           keepalive_count=g.keepalive_count, coalesce=g.coalesce)
    LOG.info("instance monitor: watching %s for guest failures", g.libvirt_uri)
    return monitor


def reload(conf, agent: Agent) -> None:
    """SIGHUP: the log level ([DEFAULT] debug, log_config_append) and the watched
    processes ([agent] watched_processes) take their new values."""
    old = dict(conf.agent.watched_processes)
    common.reload_config(conf, PROG)
    new = dict(conf.agent.watched_processes)
    if new != old:
        agent.health.probe = health.ProcessProbe(new)
        LOG.info("watched processes now %s", ", ".join(
            f"{k}:{v}" for k, v in sorted(new.items())) or "none")


def main(argv=None) -> int:
    conf = common.make_conf(GROUPS)
    common.load(conf, sys.argv[1:] if argv is None else argv, PROG, groups=GROUPS)
    agent = common.build_or_refuse(PROG, build, conf)
    common.exit_on_thread_crash(PROG)
    stop = threading.Event()
    received = []

    def on_signal(name):  # no logging in a signal handler: it may hold the log lock
        received.append(name)
        stop.set()
        agent.request_stop()

    agent.reloader = lambda: reload(conf, agent)
    common.on_stop_signals(on_signal, reload=agent.request_reload)
    LOG.info("%s starting as host %s", PROG, conf.host)
    insecure = policy.insecure_warning(conf)
    if insecure:
        LOG.warning(insecure)
    try:
        # first of all: a restarted agent must resume its session within the
        # session timeout; the rest of the start waits (the loop retries a failure)
        agent.connect()
    except exceptions.SessionTimeoutRejected as e:
        refuse_rejected(conf, agent, e)
    except exceptions.CoordinationError as e:
        LOG.warning("%s; %s, the loop tries again", e, e.action.value)
    from instanceha.agent.metrics import AgentMetrics

    metrics = AgentMetrics(agent)
    telemetry = common.start_telemetry(
        conf, conf.telemetry.agent_port, metrics.registry,
        common.loop_health(lambda: agent.last_iteration, agent.clock,
                           conf.telemetry.stall_after),
        lambda: (agent.is_joined(), "joined" if agent.is_joined() else "not joined"))
    sd = sdnotify.SystemdNotifier()
    on_iteration = sd.loop_hook(agent.coordinator.joined, f"joined as {conf.host}")

    rejected = None
    try:
        agent.run(on_iteration)
    except exceptions.SessionTimeoutRejected as e:
        rejected = e
    except Exception as e:
        # no planned-stop mark, no clean-up that could block: exit with an error so
        # that systemd restarts the agent at once
        common.exit_on_crash(PROG, e)
    finally:
        if stop.is_set():
            LOG.info("%s received: planned stop", received[0] if received else "signal")
            sd.stopping()
            agent.shutdown(planned=True, reason="agent stopped by signal")
        if telemetry is not None:
            telemetry.stop()
    if rejected is not None:
        refuse_rejected(conf, agent, rejected)
    return 0


def refuse_rejected(conf, agent: Agent, error: exceptions.SessionTimeoutRejected) -> None:
    """The server grants another session timeout: a configuration error (exit 2)."""
    if agent.session_file is not None:
        agent.session_file.remove()
    common.refuse(PROG, policy.session_timeout_error(conf, error))


if __name__ == "__main__":
    sys.exit(main())
