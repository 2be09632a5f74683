"""Set-up shared by the console scripts: config, logging, signals."""

from __future__ import annotations

import signal
import sys

from oslo_config import cfg
from oslo_log import log as logging

from instanceha import conf as ih_conf
from instanceha import exceptions
from instanceha.version import __version__

LOG = logging.getLogger(__name__)
PROJECT = "instanceha"


def make_conf() -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    ih_conf.register_all(conf)
    logging.register_options(conf)
    return conf


def load(conf: cfg.ConfigOpts, argv: list[str], prog: str, with_logging: bool = True) -> None:
    """Parse argv and the config files; exit 2 with a clear message on bad config."""
    try:
        conf(argv, project=PROJECT, prog=prog, version=__version__,
             default_config_files=cfg.find_config_files(PROJECT, prog) or None)
    except (cfg.Error, ValueError) as e:
        sys.stderr.write(f"{prog}: configuration error: {e}\n")
        sys.exit(2)
    from instanceha.conf import validate

    try:
        validate.validate_values(conf)
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


def on_stop_signals(callback) -> None:
    def handler(signum, frame):
        callback(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


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


def loop_health(last_iteration, clock, stall_after: float):
    def healthy():
        last = last_iteration()
        if last is None:
            return False, "starting"
        age = clock() - last
        if age > stall_after:
            return False, f"main loop stalled for {age:.1f} s"
        return True, f"main loop ran {age:.1f} s ago"

    return healthy
