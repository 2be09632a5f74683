"""The consuming side: subscribe to instanceha's notifications, render them.

Used by ``instanceha listen``; a VNF manager that does not want to depend on
instanceha can copy ``examples/custom_recovery_hook.py`` instead, which uses
oslo.messaging alone.

Each listener reads from its own *pool* (a queue of its own bound to the
notification topics), so it never takes messages away from other consumers
(ceilometer, another listener). One worker thread handles the messages, in
the order the queue delivers them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable

import oslo_messaging

from instanceha.notify import events

PRIORITIES = ("audit", "critical", "debug", "error", "info", "sample", "warn")


@dataclasses.dataclass(frozen=True)
class Received:
    event_type: str
    priority: str
    publisher_id: str
    payload: dict
    message_id: str
    timestamp: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _first_fields(payload: dict) -> list[str]:
    order = ["host", "incident_id", "instance_id", "project_id", "policy"]
    rest = sorted(k for k in payload if k not in order and k != "version")
    return [k for k in order if k in payload] + rest


def _value(v: object) -> str:
    if isinstance(v, str) and v and not re.search(r"[\s\"'=]", v):
        return v
    return json.dumps(v)


def format_text(r: Received) -> str:
    """One line: time, event type, then key=value for the payload."""
    fields = " ".join(f"{k}={_value(r.payload[k])}" for k in _first_fields(r.payload))
    return f"{r.timestamp} {r.event_type} {fields}".rstrip()


def format_json(r: Received) -> str:
    return json.dumps(r.as_dict(), sort_keys=True)


class _Endpoint:
    def __init__(self, on_event: Callable[[Received], object], event_type_pattern: str):
        self._on_event = on_event
        self.filter_rule = oslo_messaging.NotificationFilter(event_type=event_type_pattern)
        for priority in PRIORITIES:
            setattr(self, priority, self._handler(priority))

    def _handler(self, priority: str):
        def handle(ctxt, publisher_id, event_type, payload, metadata):
            return self._on_event(Received(
                event_type=event_type, priority=priority.upper(), publisher_id=publisher_id,
                payload=payload, message_id=metadata.get("message_id", ""),
                timestamp=str(metadata.get("timestamp", ""))))
        return handle


class Listener:
    """An oslo.messaging notification listener on its own pool.

    ``on_event`` runs in the listener's single worker thread (events are
    handled one at a time, in queue order); returning
    ``oslo_messaging.NotificationResult.REQUEUE`` puts the message back.
    ``conf`` is handed to oslo.messaging as is (transport_url, rabbit options).
    """

    def __init__(self, conf, topics: tuple[str, ...], pool: str,
                 on_event: Callable[[Received], object],
                 event_type_pattern: str = "^" + re.escape(events.PREFIX),
                 url: str | None = None, exchange: str | None = None) -> None:
        """``url``: another bus than the configured one; ``exchange``: another
        project's (Nova notifies on ``nova``)."""
        self.pool = pool
        self.transport = oslo_messaging.get_notification_transport(conf, url=url)
        targets = [oslo_messaging.Target(topic=t, exchange=exchange) for t in topics]
        self.server = oslo_messaging.get_notification_listener(
            self.transport, targets, [_Endpoint(on_event, event_type_pattern)],
            executor="threading", pool=pool, allow_requeue=True)

    def start(self) -> Listener:
        """Declares the pool's queue and its bindings, then returns: events
        emitted from now on reach this listener."""
        self.server.start(override_pool_size=1)
        return self

    def stop(self) -> None:
        self.server.stop()
        self.server.wait()
        self.transport.cleanup()
