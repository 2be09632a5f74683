"""Checks of the fields of a notification payload: each returns the value or
raises ValueError naming the field, so that a wrong payload is refused where
it is built (``events``), never sent."""

from __future__ import annotations


def text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, not {value!r}")
    return value


def count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    return value


def seconds(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, not {value!r}")
    return float(value)


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a boolean, not {value!r}")
    return value


def positive(name: str, value: object) -> int:
    if count(name, value) < 1:
        raise ValueError(f"{name} counts from 1")
    return value  # type: ignore[return-value]
