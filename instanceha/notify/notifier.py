"""The notifier the controller holds: ``emit(event)`` returns at once.

    notifier = make_notifier(conf, settings, policy).start()
    notifier.emit(events.host_failed(host=..., reason=..., incident_id=...))
    ...
    notifier.close()          # on shutdown: flush for a bounded time

Each event gets its ``message_id`` and ``timestamp`` (UTC, when it was
emitted, not when it was finally delivered) here, in the envelope
oslo.messaging's Notifier builds, so consumers of ``messagingv2`` see a normal
OpenStack notification. A retried message keeps its ``message_id``: delivery
is at least once, and a consumer that must act once deduplicates on it.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Callable

from instanceha.clock import SYSTEM, Clock
from instanceha.notify import events
from instanceha.notify.bus import BusSettings, DriverDelivery, redact
from instanceha.notify.outbox import DeliveryPolicy, Outbox, StatsSnapshot

LOG = logging.getLogger(__name__)


def envelope(event: events.Event, publisher_id: str, message_id: str,
             timestamp: datetime.datetime) -> dict:
    """The message as oslo.messaging's Notifier builds it (same keys, same
    timestamp format)."""
    return {
        "message_id": message_id,
        "publisher_id": publisher_id,
        "event_type": event.event_type,
        "priority": event.priority,
        "payload": event.payload_dict(),
        "timestamp": str(timestamp),
    }


class Notifier:
    """Emits events through an outbox; a disabled notifier (no driver
    configured) accepts events and drops them silently."""

    def __init__(self, outbox: Outbox | None, publisher_id: str,
                 clock: Clock = SYSTEM,
                 new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
                 on_close: Callable[[], None] | None = None) -> None:
        self.outbox = outbox
        self.publisher_id = publisher_id
        self._clock = clock
        self._new_id = new_id
        self._on_close = on_close

    @property
    def enabled(self) -> bool:
        return self.outbox is not None

    def emit(self, event: events.Event,
             on_done: Callable[[bool], None] | None = None) -> str | None:
        """Queue ``event`` for delivery; returns its message_id (None when
        notifications are disabled: ``on_done`` is then never called). Never
        blocks, never raises for a bus problem. ``on_done(delivered)``: called
        once the message was delivered (True) or given up (False)."""
        if self.outbox is None:
            return None
        message_id = self._new_id()
        # oslo.messaging's format: a naive UTC datetime
        stamp = self._clock.utcnow().replace(tzinfo=None)
        self.outbox.put(envelope(event, self.publisher_id, message_id, stamp), on_done)
        return message_id

    def stats(self) -> StatsSnapshot:
        return self.outbox.stats.snapshot() if self.outbox else StatsSnapshot()

    def start(self) -> Notifier:
        if self.outbox is not None:
            self.outbox.start()
        return self

    def close(self, timeout: float | None = None) -> StatsSnapshot:
        snap = self.outbox.close(timeout) if self.outbox else StatsSnapshot()
        if self._on_close is not None:
            try:
                self._on_close()
            except Exception as e:
                LOG.warning("closing the notification transport failed: %s",
                            redact(str(e)))
        return snap


def make_notifier(conf, settings: BusSettings, policy: DeliveryPolicy,
                  clock: Clock = SYSTEM, transport=None) -> Notifier:
    """A Notifier on the bus that ``conf`` (an oslo ConfigOpts, handed to
    oslo.messaging as is) configures. Not started."""
    if not settings.enabled:
        LOG.info("notifications disabled: no [oslo_messaging_notifications] driver")
        return Notifier(None, settings.publisher_id)
    delivery = DriverDelivery(conf, settings, transport=transport)
    outbox = Outbox(delivery, policy, clock=clock, redact=redact)
    LOG.info("notifications: drivers %s, topics %s, publisher %s, deadline %.0f s",
             ",".join(settings.drivers), ",".join(settings.topics), settings.publisher_id,
             policy.deadline)
    return Notifier(outbox, settings.publisher_id, clock=clock, on_close=delivery.close)
