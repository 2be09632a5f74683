"""``instanceha listen``: print instanceha's notifications as they come.

    instanceha listen                       # one line per event
    instanceha listen --format json         # JSON lines, for scripts
    instanceha listen --pool vnfm-a         # a named, lasting queue of your own
    instanceha listen --count 3 --timeout 60

The bus is the one the configuration names (``transport_url``,
``[oslo_messaging_notifications] topics``); the URL is never printed. The
listener reads from its own pool (queue), so it takes nothing away from other
consumers. Without ``--pool`` the queue is unique to this run and deleted on
exit; with ``--pool NAME`` it stays, and collects events while nobody listens
(what a VNF manager wants across its own restarts).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import warnings

from instanceha.cmd import common

PREFIX_PATTERN = r"^instanceha\."


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "listen", help="print instanceha's notifications as they arrive",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: one line per event (default); json: one JSON object per line")
    p.add_argument("--pool", default=None, metavar="NAME",
                   help="queue pool to read from; default: a queue unique to this run, "
                   "deleted on exit")
    p.add_argument("--topic", action="append", default=None, metavar="TOPIC",
                   help="notification topic (repeatable); default [oslo_messaging_notifications]"
                   " topics")
    p.add_argument("--event-type", default=PREFIX_PATTERN, metavar="REGEX",
                   help=f"only events whose type matches (default {PREFIX_PATTERN!r})")
    p.add_argument("--count", type=int, default=0, metavar="N",
                   help="exit 0 after N events (default: run until interrupted)")
    p.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS",
                   help="exit 1 if --count events have not arrived within SECONDS")
    p.set_defaults(handler=run_listen)


def _load():
    # oslo.messaging imports oslo.service, whose eventlet backend warns at import
    warnings.filterwarnings("ignore", message=r"(?s)\s*Eventlet is deprecated")
    from instanceha.conf import notifications as conf_notifications
    from instanceha.notify import bus, listener

    return conf_notifications, bus, listener


def run_listen(args, conf) -> int:
    conf_notifications, bus, listener = _load()
    try:
        re.compile(args.event_type)
    except re.error as e:
        print(f"listen: bad --event-type: {e}", file=sys.stderr)
        return 2
    settings = conf_notifications.bus_settings(conf, role="listen")
    topics = tuple(args.topic or settings.topics)
    pool = args.pool or f"instanceha-listen.{socket.gethostname()}.{os.getpid()}"
    render = listener.format_json if args.format == "json" else listener.format_text
    done = threading.Event()
    seen = 0
    lock = threading.Lock()

    def on_event(received):
        nonlocal seen
        with lock:
            print(render(received), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                done.set()

    common.on_stop_signals(lambda name: done.set())
    try:
        lst = listener.Listener(conf, topics, pool, on_event, args.event_type)
    except Exception as e:
        print(f"listen: cannot set up the bus: {type(e).__name__}: {bus.redact(str(e))}",
              file=sys.stderr)
        return 1
    started = threading.Event()
    failed = []

    def start():
        # oslo.messaging retries the first connection for as long as it takes:
        # keep the main thread free for signals and --timeout
        try:
            lst.start()
        except Exception as e:
            failed.append(e)
            done.set()
            return
        started.set()
        print(f"listening on topics {','.join(topics)} (pool {pool}); Ctrl-C to stop",
              file=sys.stderr, flush=True)

    threading.Thread(target=start, name="listen-start", daemon=True).start()
    done.wait(args.timeout or None)
    if failed:
        print(f"listen: cannot subscribe: {type(failed[0]).__name__}: "
              f"{bus.redact(str(failed[0]))}", file=sys.stderr)
        return 1
    if not started.is_set():
        print("listen: the notification bus is unreachable", file=sys.stderr)
        return 1
    lst.stop()
    if args.pool is None:
        delete_queue(conf, pool, bus)
    if args.count and seen < args.count:
        print(f"listen: {seen} of {args.count} events within {args.timeout} s",
              file=sys.stderr)
        return 1
    return 0


def delete_queue(conf, pool: str, bus) -> None:
    """Best effort: remove this run's own queue (RabbitMQ keeps it otherwise)."""
    try:
        import kombu
        import oslo_messaging

        url = oslo_messaging.TransportURL.parse(
            conf, conf.oslo_messaging_notifications.transport_url or conf.transport_url)
        if url.transport not in ("rabbit", "kombu"):
            return
        host = url.hosts[0]
        with kombu.Connection(hostname=host.hostname, port=host.port, userid=host.username,
                              password=host.password, virtual_host=url.virtual_host or "/",
                              connect_timeout=5) as c:
            c.default_channel.queue_delete(pool)
    except Exception as e:
        print(f"listen: could not delete queue {pool}: {type(e).__name__}: "
              f"{bus.redact(str(e))}", file=sys.stderr)


def main(argv=None) -> int:
    """``python -m instanceha.cmd.listen_cli [--config-file F] [listen options]``."""
    import argparse

    p = argparse.ArgumentParser(prog="instanceha-listen")
    p.add_argument("--config-file", action="append", default=[], metavar="PATH")
    sub = p.add_subparsers(dest="command")
    register(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(config_file_first(argv))
    conf = common.make_conf()
    common.load(conf, [a for f in args.config_file for a in ("--config-file", f)],
                "instanceha", with_logging=False)
    return args.handler(args, conf)


def config_file_first(argv: list[str]) -> list[str]:
    """Put the global --config-file options before the ``listen`` subcommand."""
    head, rest, it = [], [], iter(argv)
    for a in it:
        if a == "--config-file":
            head += [a, next(it)]
        elif a.startswith("--config-file="):
            head.append(a)
        else:
            rest.append(a)
    return head + ["listen"] + rest


if __name__ == "__main__":
    sys.exit(main())
