"""Set-up shared by the console scripts: config, logging, signals."""

from __future__ import annotations

import logging as std_logging
import os
import signal
import sys
import threading

from oslo_config import cfg
from oslo_log import log as logging

from instanceha import conf as ih_conf
from instanceha import exceptions
from instanceha.clock import Clock
from instanceha.version import __version__

LOG = logging.getLogger(__name__)
PROJECT = "instanceha"


def make_conf(groups=None) -> cfg.ConfigOpts:
    """A ConfigOpts with instanceha's options (``groups``: only these option
    modules, e.g. the agent's: the others' imports cost nothing at start) and
    oslo.log's."""
    conf = cfg.ConfigOpts()
    ih_conf.register_all(conf, groups)
    logging.register_options(conf)
    return conf


def load(conf: cfg.ConfigOpts, argv: list[str], prog: str, with_logging: bool = True,
         groups=None) -> None:
    """Parse argv and the config files; exit 2 with a clear message on bad config."""
    try:
        conf(argv, project=PROJECT, prog=prog, version=__version__,
             default_config_files=cfg.find_config_files(PROJECT, prog) or None)
    except (cfg.Error, ValueError) as e:
        sys.stderr.write(f"{prog}: configuration error: {e}\n")
        sys.exit(2)
    from instanceha.conf import validate

    try:
        validate.validate_values(conf, groups)
    except exceptions.ConfigError as e:
        sys.stderr.write(f"{prog}: configuration error: {e}\n")
        sys.exit(2)
    if with_logging:
        logging.setup(conf, PROJECT)


def table_lines(rows) -> list[str]:
    """Rows (the first one the header) as left-aligned columns, for the CLI's tables."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def build_or_refuse(prog: str, build, conf):
    """``build(conf)``, or exit 2 naming what is wrong in the configuration."""
    error = None
    try:
        return build(conf)
    except exceptions.InstanceHAError as e:
        error = e
    refuse(prog, error)


def refuse(prog: str, error: exceptions.InstanceHAError) -> None:
    sys.stderr.write(f"{prog}: refusing to start: {error}\n")
    LOG.error("refusing to start: %s", error)
    sys.exit(2)


EXIT_CRASH = 70
"""Exit status of a daemon that ended on an uncaught exception (``EX_SOFTWARE``):
an error, so that systemd restarts it (``Restart=always``)."""


def on_stop_signals(callback, reload=None) -> None:
    """Every signal a daemon is sent by habit has a meaning:

    * SIGTERM, SIGINT: the planned stop, ``callback(name)``;
    * SIGHUP, for a daemon (``reload`` given): ``reload()``, re-read what can
      be re-read; never the end of the process (Python's default action for
      SIGHUP is to terminate, operators send it to OpenStack daemons by habit,
      and systemd counts a death by SIGHUP as clean: ``Restart=on-failure``
      would not even restart it). A command line tool keeps the default (its
      terminal hung up).

    The callbacks run in the main thread between two bytecodes, possibly while
    it holds a lock (the logging one among them): they only set flags and
    wake loops; the loops do the work."""

    def handler(signum, frame):
        callback(signal.Signals(signum).name)

    def on_hup(signum, frame):
        reload()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    if reload is not None:
        signal.signal(signal.SIGHUP, on_hup)


def reload_config(conf: cfg.ConfigOpts, prog: str) -> dict:
    """Re-read the configuration files (SIGHUP, from the daemon's loop): the
    options marked mutable take their new values and oslo.log applies
    ``debug`` (the log level) and ``log_config_append``. Never raises: a file
    that no longer parses is reported and the running values are kept.
    Returns {(group, option): (old, new)} of what changed."""
    try:
        changed = conf.mutate_config_files()
    except Exception as e:  # a broken file must not end the daemon
        LOG.error("%s: SIGHUP: the configuration was not reloaded (%s: %s); the running "
                  "values are kept: fix the file and send SIGHUP again", prog,
                  type(e).__name__, e)
        return {}
    what = ", ".join(f"[{g or 'DEFAULT'}] {o}" for g, o in sorted(
        changed, key=lambda k: (k[0] or "", k[1]))) or "nothing changed"
    LOG.info("%s: SIGHUP: configuration reloaded from %s: %s", prog,
             ", ".join(conf.config_file or ()) or "(no file)", what)
    return changed


def exit_on_crash(prog: str, error: BaseException, where: str = "the main loop") -> None:
    """End the process at once with ``EXIT_CRASH`` after logging ``error``:
    no clean-up that could block (a non-daemon thread, a lock held by the dead
    thread), no planned-stop announcement. systemd restarts the daemon; an
    agent resumes its coordinator session (``[agent] session_file``)."""
    try:
        LOG.critical("%s: uncaught %s in %s: exiting with status %d so that it is "
                     "restarted", prog, type(error).__name__, where, EXIT_CRASH,
                     exc_info=(type(error), error, error.__traceback__))
        for handler in std_logging.getLogger().handlers:
            handler.flush()
    finally:
        os._exit(EXIT_CRASH)


def exit_on_thread_crash(prog: str, stop=None) -> None:
    """An uncaught exception in any thread ends the process: a daemon that lost
    one of its threads silently keeps looking alive. Without ``stop``, at once
    (``exit_on_crash``); with it, ``stop(error)`` asks the main loop to end
    (its clean-up runs, then the daemon exits with ``EXIT_CRASH``)."""

    def hook(args) -> None:
        if issubclass(args.exc_type, SystemExit):
            return
        error = args.exc_value if args.exc_value is not None else args.exc_type()
        name = args.thread.name if args.thread is not None else "a thread"
        if stop is None:
            exit_on_crash(prog, error, f"thread {name!r}")
        LOG.critical("%s: uncaught %s in thread %r: stopping, then exiting with status %d "
                     "so that it is restarted", prog, type(error).__name__, name, EXIT_CRASH,
                     exc_info=(type(error), error, error.__traceback__))
        stop(error)

    threading.excepthook = hook


def start_telemetry(conf, port: int, registry, healthy, ready):
    """The /metrics /healthz /readyz endpoint, or None when disabled."""
    from instanceha.telemetry.server import TelemetryServer

    if not conf.telemetry.enabled:
        return None
    try:
        server = TelemetryServer(registry, healthy, ready, conf.telemetry.bind_host, port).start()
    except OSError as e:
        refuse("telemetry", exceptions.ConfigError(
            group="telemetry", option="bind_host/port", file="(see the configuration)",
            reason=f"cannot listen on {conf.telemetry.bind_host}:{port}: {e.strerror}"))
    LOG.info("telemetry on http://%s:%d/metrics", *server.address)
    return server


def loop_health(last_iteration, clock: Clock, stall_after: float):
    def healthy():
        last = last_iteration()
        if last is None:
            return False, "starting"
        age = clock.monotonic() - last
        if age > stall_after:
            return False, f"main loop stalled for {age:.1f} s"
        return True, f"main loop ran {age:.1f} s ago"

    return healthy
