"""oslo.messaging glue: the transport, the drivers, the message envelope.

Why not ``oslo_messaging.Notifier.info()``: the Notifier and its
``messaging``/``messagingv2`` drivers catch every delivery error, log it (with
the payload) and return as if the message had been sent, so a caller cannot
retry, and they draw a new ``message_id`` on each call, so a retried message
cannot be told from a new one. instanceha keeps oslo.messaging's
configuration (``[oslo_messaging_notifications] driver/topics/transport_url``),
its driver plugins and its wire format (the ``messagingv2`` 2.0 envelope on
``<topic>.<priority>``), but delivers each message itself with the same
``message_id`` on every attempt and lets errors reach the outbox, which
retries until delivered or until the deadline.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import oslo_messaging
from oslo_messaging.notify import messaging as om_messaging
from stevedore import named

from instanceha.notify.exceptions import NotificationSetupError

DRIVER_NAMESPACE = "oslo.messaging.notify.drivers"
DISABLED = ("noop",)

_URL_CREDENTIALS = re.compile(r"://\S*@")


def redact(text: str) -> str:
    """Remove credentials from anything that looks like a URL."""
    return _URL_CREDENTIALS.sub("://***@", text)


@dataclasses.dataclass(frozen=True)
class BusSettings:
    """What the configuration says about the bus (read at the edge)."""

    drivers: tuple[str, ...] = ()
    topics: tuple[str, ...] = ("notifications",)
    publisher_id: str = "instanceha-controller"

    @property
    def enabled(self) -> bool:
        return any(d not in DISABLED for d in self.drivers)


class StrictMessagingDriver(om_messaging.MessagingDriver):
    """oslo.messaging's messaging driver, minus the ``except Exception: log``:
    a failed send raises, so the outbox can retry it."""

    def notify(self, ctxt, message, priority, retry):
        for topic in self.topics:
            target = oslo_messaging.Target(topic=f"{topic}.{priority.lower()}")
            self.transport._send_notification(target, ctxt, message, version=self.version,
                                              retry=retry)


class StrictMessagingV2Driver(StrictMessagingDriver):
    def __init__(self, conf, **kwargs):
        super().__init__(conf, version=2.0, **kwargs)


STRICT = {"messaging": StrictMessagingDriver, "messagingv2": StrictMessagingV2Driver}


class DriverDelivery:
    """``deliver(message, sent_to)`` for the outbox: hands the message to every
    configured driver not yet in ``sent_to``; raises on the first failure."""

    def __init__(self, conf, settings: BusSettings, transport=None) -> None:
        if transport is None:
            try:
                transport = oslo_messaging.get_notification_transport(conf)
            except Exception as e:
                # InvalidTransportURL's message holds the URL: never re-raise it
                raise NotificationSetupError(
                    what="transport", reason=f"{type(e).__name__}: {redact(str(e))}") from None
        self.transport = transport
        self.drivers: list[tuple[str, Any]] = []  # (name, an oslo.messaging driver)
        topics = list(settings.topics)
        others = [d for d in settings.drivers if d not in STRICT and d not in DISABLED]
        loaded = {}
        if others:
            try:
                mgr: named.NamedExtensionManager[Any] = named.NamedExtensionManager(
                    DRIVER_NAMESPACE, names=others, invoke_on_load=True, invoke_args=(conf,),
                    invoke_kwds={"topics": topics, "transport": transport},
                    name_order=True, on_missing_entrypoints_callback=self._missing)
            except NotificationSetupError:
                raise
            except Exception as e:
                raise NotificationSetupError(
                    what="drivers", reason=f"{type(e).__name__}: {redact(str(e))}") from None
            loaded = {ext.name: ext.obj for ext in mgr.extensions}
        for name in settings.drivers:
            if name in STRICT:
                self.drivers.append((name, STRICT[name](conf, topics=topics,
                                                        transport=transport)))
            elif name in loaded:
                self.drivers.append((name, loaded[name]))

    @staticmethod
    def _missing(names):
        raise NotificationSetupError(
            what="drivers",
            reason=f"unknown [oslo_messaging_notifications] driver {sorted(names)}")

    def __call__(self, message: dict, sent_to: set) -> None:
        for name, driver in self.drivers:
            if name in sent_to:
                continue
            # retry=0: one attempt; the outbox owns retries, backoff and deadline
            driver.notify({}, message, message["priority"], 0)
            sent_to.add(name)

    def close(self) -> None:
        self.transport.cleanup()
