#!/usr/bin/env python3
"""A custom recovery hook for notify-only instances: a starting point for VNF managers.

instanceha evacuates the instances whose policy is ``evacuate``. For those
whose policy is ``notify`` it emits one ``instanceha.instance.recovery_required``
notification each, once their host is confirmed powered off, and leaves the
recovery to the owner. This script subscribes to those notifications and runs
a command of yours for each::

    custom_recovery_hook.py --config-file vnfm.conf --pool vnfm-a \\
        --project 6f1c... -- /usr/local/bin/heal-vnfc

It needs only oslo.messaging (not instanceha). ``vnfm.conf`` names the bus the
way every OpenStack service does::

    [DEFAULT]
    transport_url = rabbit://vnfm:SECRET@rabbit1:5672/
    [oslo_messaging_notifications]
    topics = notifications
    [oslo_messaging_rabbit]
    amqp_durable_queues = true     # the pool's queue survives a broker restart

The command gets the notification as JSON on stdin and, in its environment,
``INSTANCE_ID``, ``PROJECT_ID``, ``FAILED_HOST``, ``INCIDENT_ID``,
``MESSAGE_ID``, ``IDEMPOTENCY_KEY``. Exit 0: done. Any other exit (or a timeout): the message is
put back and tried again, at most ``--max-attempts`` times.

Delivery is at least once (a message may come twice, for example after a
broker restart, or from a new instanceha leader that took over mid-incident):
the script remembers the idempotency keys it handled (``idempotency_key`` in
the payload: one per step of an incident, the same on every copy; the message
id for payloads older than 1.2) and runs the command once per key. The pool
(``--pool``) is a queue of its own: it receives every event while this script
is down, and takes nothing away from other consumers. Use one pool name per
VNF manager, the same on every restart.
"""

import argparse
import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings

warnings.filterwarnings("ignore", message=r"(?s)\s*Eventlet is deprecated")

import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402

LOG = logging.getLogger("custom_recovery_hook")
EVENT = "instanceha.instance.recovery_required"


class RecoveryEndpoint:
    """oslo.messaging calls ``info()`` for each INFO notification that passes
    ``filter_rule``; the return value acks (None) or requeues the message."""

    filter_rule = oslo_messaging.NotificationFilter(event_type="^" + EVENT.replace(".", r"\.")
                                                    + "$")

    def __init__(self, command, projects, timeout, max_attempts):
        self.command = command
        self.projects = set(projects)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.done = collections.OrderedDict()  # idempotency key -> True, bounded
        self.attempts = collections.Counter()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        message_id = metadata["message_id"]
        key = payload.get("idempotency_key") or message_id
        if key in self.done:
            LOG.info("duplicate %s for %s: already handled", key, payload.get("instance_id"))
            return None
        if self.projects and payload.get("project_id") not in self.projects:
            return None  # not one of ours
        if payload.get("dry_run") or not payload.get("host_fenced"):
            LOG.info("%s: host %s not fenced (or dry run): nothing to do",
                     payload.get("instance_id"), payload.get("host"))
            return self._handled(key)
        if not payload.get("version", "").startswith("1."):
            LOG.error("payload version %s not understood; skipping %s",
                      payload.get("version"), message_id)
            return self._handled(key)
        notification = {"event_type": event_type, "publisher_id": publisher_id,
                        "message_id": message_id, "timestamp": str(metadata.get("timestamp")),
                        "payload": payload}
        env = dict(os.environ, INSTANCE_ID=payload["instance_id"],
                   PROJECT_ID=payload["project_id"], FAILED_HOST=payload["host"],
                   INCIDENT_ID=payload["incident_id"], MESSAGE_ID=message_id,
                   IDEMPOTENCY_KEY=key)
        self.attempts[key] += 1
        try:
            result = subprocess.run(self.command, input=json.dumps(notification), text=True,
                                    env=env, timeout=self.timeout, check=False)
            ok = result.returncode == 0
        except (OSError, subprocess.TimeoutExpired) as e:
            LOG.error("hook for %s failed: %s", payload["instance_id"], e)
            ok = False
        if ok:
            LOG.info("recovered %s (project %s) from %s", payload["instance_id"],
                     payload["project_id"], payload["host"])
            return self._handled(key)
        if self.attempts[key] >= self.max_attempts:
            LOG.error("giving up on %s after %d attempts", payload["instance_id"],
                      self.attempts[key])
            return self._handled(key)
        return oslo_messaging.NotificationResult.REQUEUE

    def _handled(self, key):
        self.done[key] = True
        self.attempts.pop(key, None)
        while len(self.done) > 100000:
            self.done.popitem(last=False)
        return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--pool", required=True, help="this consumer's own queue name")
    p.add_argument("--project", action="append", default=[],
                   help="only instances of this project (repeatable; default: all)")
    p.add_argument("--timeout", type=float, default=300.0, help="hook timeout, seconds")
    p.add_argument("--max-attempts", type=int, default=5)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- command [args...]")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the hook command after --")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    conf = cfg.ConfigOpts()
    conf([], default_config_files=[args.config_file])
    transport = oslo_messaging.get_notification_transport(conf)
    topics = conf.oslo_messaging_notifications.topics
    endpoint = RecoveryEndpoint(command, args.project, args.timeout, args.max_attempts)
    server = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=t) for t in topics], [endpoint],
        executor="threading", pool=args.pool, allow_requeue=True)
    server.start(override_pool_size=1)  # one at a time, in order
    LOG.info("waiting for %s on %s (pool %s)", EVENT, ",".join(topics), args.pool)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    server.wait()
    transport.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
