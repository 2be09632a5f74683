"""One type for a secret value: a password, a key, a session password.

A :class:`Secret` never shows itself in ``repr()``, ``str()``, a log line, a
traceback or a pickle; the code that needs the value calls ``reveal()`` at the
last moment (building a request, deriving a digest).
"""

from __future__ import annotations


class Secret:
    """A string that does not show itself in repr(), str(), logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('******')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # never pickled into a queue or a cache by accident
        raise TypeError("a Secret cannot be pickled")
