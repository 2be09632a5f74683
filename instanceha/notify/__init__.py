"""Failure notifications on the OpenStack notification bus (oslo.messaging).

* ``events``: the event type names and payload builders (pure);
* ``notifier.make_notifier``: the controller's Notifier, whose ``emit()``
  never blocks; ``outbox``: the ordered, retrying sender behind it;
* ``bus``: the oslo.messaging glue; ``listener``: the consuming side used by
  ``instanceha listen``.

This package imports nothing heavy by itself: oslo.messaging is loaded only by
the modules that need it (``bus``, ``notifier``, ``listener``).
"""
