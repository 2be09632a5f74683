"""What to do with one instance of a failed host (evacuate, notify, or ignore),
and with one whose guest failed on a healthy host (restart, notify, or ignore).

Pure: the caller gathers the facts (server metadata, flavor extra specs, image
properties, metadata of the host's aggregates) and the cloud-wide default; this
module decides and says which source decided. Documented for operators and
tenants in ``doc/source/instance-policy.rst``.

Precedence, first source with a valid setting wins::

    1. server metadata     instanceha:recovery   (alias HA_Enabled=True|False)
    2. flavor extra spec   instanceha:recovery   (alias evacuable=true|false)
    3. image property      instanceha_recovery   (alias evacuable=true|false)
    4. host aggregate      instanceha:recovery   (alias evacuable=true|false)
    5. the cloud-wide default ([nova] default_instance_recovery)

The server is the most specific object and its metadata is the "keep running"
switch that tenants and operators set per instance; the flavor (an operator's
class of service) comes before the image (which tenants can upload); the
aggregate describes where it runs. Values are case-insensitive. An invalid
value is skipped (and reported in ``notes``); the next source decides.
Aggregates that disagree: the strongest outcome wins (evacuate > notify >
ignore), with a note.

Guest failures (``decide_guest``: QEMU died, the guest crashed, hung and fired
its watchdog, stopped on an I/O error) read the same places, in the same
order, under their own key, so a host failure and a guest failure of one
instance can be treated differently::

    1. server metadata     instanceha:guest      (alias HA_Enabled=True|False)
    2. flavor extra spec   instanceha:guest
    3. image property      instanceha_guest
    4. host aggregate      instanceha:guest
    5. the cloud-wide default ([guest] default_policy)

with the values restart, notify and ignore (aggregates that disagree:
restart > notify > ignore). ``HA_Enabled`` is Masakari's switch, which covers
both failure types there: True means restart, False ignore.

The restart priority (``decide_priority``: who is evacuated first, and who
gets the room when it is short) reads the same places in the same order::

    1. server metadata     instanceha:priority
    2. flavor extra spec   instanceha:priority
    3. image property      instanceha_priority
    4. host aggregate      instanceha:priority
    5. the cloud-wide default ([capacity] default_priority)

with vSphere HA's names (lowest 100, low 200, medium 300, high 400, highest
500) or any integer from 0 to 1000; aggregates that disagree: the highest wins.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

KEY = "instanceha:recovery"
IMAGE_KEY = "instanceha_recovery"  # glance style: flavor 'a:b' is image 'a_b'
MASAKARI_KEY = "HA_Enabled"  # Masakari's server metadata switch
EVACUABLE_KEY = "evacuable"  # Red Hat InstanceHA's flavor / image / aggregate tag

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


_E = TypeVar("_E", bound=enum.Enum)


def _member(cls: type[_E], value: object) -> _E | None:
    """``value`` as a member of the enum ``cls`` (a member, or its value in any
    case and spacing), or None when it is not one."""
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).strip().lower())
    except ValueError:
        return None


class Recovery(enum.Enum):
    EVACUATE = "evacuate"  # rebuild it on another host
    NOTIFY = "notify"  # only tell its owner (custom recovery, e.g. NFV)
    IGNORE = "ignore"  # leave it where it is

    @classmethod
    def parse(cls, value: object) -> Recovery | None:
        return _member(cls, value)


_STRENGTH = {Recovery.EVACUATE: 2, Recovery.NOTIFY: 1, Recovery.IGNORE: 0}


class Source(enum.Enum):
    SERVER = "server metadata"
    FLAVOR = "flavor extra spec"
    IMAGE = "image property"
    AGGREGATE = "host aggregate metadata"
    DEFAULT = "cloud-wide default"


@dataclasses.dataclass(frozen=True)
class InstanceFacts:
    """What the policy reads about one instance (plain data from Nova/Glance)."""

    server_metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    flavor_extra_specs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    image_properties: Mapping[str, object] = dataclasses.field(default_factory=dict)
    # name -> metadata of every aggregate the instance's host belongs to
    aggregates: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RecoveryDecision:
    recovery: Recovery
    source: Source
    key: str | None  # the key that decided (None for the default)
    value: str | None  # its value as set
    notes: tuple[str, ...] = ()  # invalid settings skipped, conflicts

    @property
    def reason(self) -> str:
        return _reason(self.recovery, self.source, self.key, self.value, self.notes)


def _reason(outcome: Any, source: Source, key: str | None, value: str | None,
            notes: Sequence[str]) -> str:
    if source is Source.DEFAULT:
        text = f"{outcome.value}: {source.value}"
    else:
        text = f"{outcome.value}: {source.value} {key}={value}"
    if notes:
        text += " (" + "; ".join(notes) + ")"
    return text


def _bool_alias(value: object) -> Recovery | None:
    v = str(value).strip().lower()
    if v in _TRUE:
        return Recovery.EVACUATE
    if v in _FALSE:
        return Recovery.IGNORE
    return None


_Parse = Callable[[str], Any]
"""A key's parser: its value as the outcome, or None when it is not valid."""
_Keys = Iterable[tuple[str, _Parse]]
_R = TypeVar("_R")


def _lookup(values: Mapping[str, object], keys: _Keys, where: str,
            notes: list[str]) -> tuple[Any, str, str] | None:
    """First valid (recovery, key, value) among ``keys`` in ``values``."""
    for key, parse in keys:
        if key not in values or values[key] is None:
            continue
        raw = str(values[key])
        recovery = parse(raw)
        if recovery is None:
            notes.append(f"invalid {where} {key}={raw!r} ignored")
            continue
        return recovery, key, raw
    return None


_NATIVE = (KEY, Recovery.parse)
_SOURCES = (
    (Source.SERVER, "server_metadata", (_NATIVE, (MASAKARI_KEY, _bool_alias))),
    (Source.FLAVOR, "flavor_extra_specs", (_NATIVE, (EVACUABLE_KEY, _bool_alias))),
    (Source.IMAGE, "image_properties", ((IMAGE_KEY, Recovery.parse),
                                        (EVACUABLE_KEY, _bool_alias))),
)
_AGGREGATE_KEYS = (_NATIVE, (EVACUABLE_KEY, _bool_alias))


def decide(facts: InstanceFacts, default: Recovery) -> RecoveryDecision:
    return _decide(facts, default, _SOURCES, _AGGREGATE_KEYS, _STRENGTH, RecoveryDecision)


def decided_by_server_or_flavor(facts: InstanceFacts) -> bool:
    """Does the server's metadata or its flavor decide its recovery? Then the
    image and the aggregates (sources 3 and 4) cannot change it, and the
    caller need not read them."""
    notes: list[str] = []
    return any(_lookup(getattr(facts, attr) or {}, keys, source.value, notes)
               for source, attr, keys in _SOURCES[:2])


def _decide(facts: InstanceFacts, default: Any, sources: Sequence[tuple[Source, str, _Keys]],
            aggregate_keys: _Keys, strength: Mapping[Any, int] | Callable[[Any], int],
            result: Callable[..., _R]) -> _R:
    """The outcome of one instance, with the source that decided it.
    ``strength``: outcome -> rank (a mapping or a callable), for aggregates
    that disagree."""
    rank: Callable[[Any], int] = strength if callable(strength) else strength.__getitem__
    notes: list[str] = []
    for source, attr, keys in sources:
        found = _lookup(getattr(facts, attr) or {}, keys, source.value, notes)
        if found:
            recovery, key, value = found
            return result(recovery, source, key, value, tuple(notes))

    votes = []
    for name in sorted(facts.aggregates or {}):
        found = _lookup(facts.aggregates[name] or {}, aggregate_keys,
                        f"aggregate {name}", notes)
        if found:
            votes.append((name, *found))
    if votes:
        name, recovery, key, value = max(votes, key=lambda v: rank(v[1]))
        if len({v[1] for v in votes}) > 1:
            notes.append("aggregates disagree: " + ", ".join(
                f"{n} {k}={v}" for n, _, k, v in votes) + f"; the strongest ({name}) wins")
        return result(recovery, Source.AGGREGATE, key, value, tuple(notes))

    return result(default, Source.DEFAULT, None, None, tuple(notes))


# -- guest failures ------------------------------------------------------------

GUEST_KEY = "instanceha:guest"
GUEST_IMAGE_KEY = "instanceha_guest"


class GuestPolicy(enum.Enum):
    RESTART = "restart"  # ask Nova to hard-reboot (or start) it, a bounded number of times
    NOTIFY = "notify"  # only tell its owner (instanceha.instance.failed)
    IGNORE = "ignore"  # do nothing (the failure is still journaled)

    @classmethod
    def parse(cls, value: object) -> GuestPolicy | None:
        return _member(cls, value)


_GUEST_STRENGTH = {GuestPolicy.RESTART: 2, GuestPolicy.NOTIFY: 1, GuestPolicy.IGNORE: 0}


def _guest_alias(value: object) -> GuestPolicy | None:
    v = str(value).strip().lower()
    if v in _TRUE:
        return GuestPolicy.RESTART
    if v in _FALSE:
        return GuestPolicy.IGNORE
    return None


@dataclasses.dataclass(frozen=True)
class GuestDecision:
    policy: GuestPolicy
    source: Source
    key: str | None
    value: str | None
    notes: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return _reason(self.policy, self.source, self.key, self.value, self.notes)


_GUEST_NATIVE = (GUEST_KEY, GuestPolicy.parse)
_GUEST_SOURCES = (
    (Source.SERVER, "server_metadata", (_GUEST_NATIVE, (MASAKARI_KEY, _guest_alias))),
    (Source.FLAVOR, "flavor_extra_specs", (_GUEST_NATIVE,)),
    (Source.IMAGE, "image_properties", ((GUEST_IMAGE_KEY, GuestPolicy.parse),)),
)
_GUEST_AGGREGATE_KEYS = (_GUEST_NATIVE,)


def decide_guest(facts: InstanceFacts, default: GuestPolicy) -> GuestDecision:
    """What to do when the instance's guest failed (its host is fine)."""
    return _decide(facts, default, _GUEST_SOURCES, _GUEST_AGGREGATE_KEYS, _GUEST_STRENGTH,
                   GuestDecision)


# -- restart priority ----------------------------------------------------------

PRIORITY_KEY = "instanceha:priority"
PRIORITY_IMAGE_KEY = "instanceha_priority"
PRIORITY_NAMES = {"lowest": 100, "low": 200, "medium": 300, "high": 400, "highest": 500}
"""vSphere HA's restart priorities by name; any integer 0..1000 works too."""
PRIORITY_MAX = 1000


def parse_priority(value: object) -> int | None:
    """``high`` -> 400, ``250`` -> 250; None when not understood."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= PRIORITY_MAX else None
    text = str(value).strip().lower()
    if text in PRIORITY_NAMES:
        return PRIORITY_NAMES[text]
    try:
        number = int(text)
    except ValueError:
        return None
    return number if 0 <= number <= PRIORITY_MAX else None


def priority_name(priority: int) -> str:
    """``400`` -> ``high``; a number without a name stays a number."""
    for name, value in PRIORITY_NAMES.items():
        if value == priority:
            return name
    return str(priority)


@dataclasses.dataclass(frozen=True)
class PriorityDecision:
    priority: int
    source: Source
    key: str | None
    value: str | None
    notes: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        text = f"priority {priority_name(self.priority)}: {self.source.value}"
        if self.source is not Source.DEFAULT:
            text += f" {self.key}={self.value}"
        if self.notes:
            text += " (" + "; ".join(self.notes) + ")"
        return text


_PRIORITY_NATIVE = (PRIORITY_KEY, parse_priority)
_PRIORITY_SOURCES = (
    (Source.SERVER, "server_metadata", (_PRIORITY_NATIVE,)),
    (Source.FLAVOR, "flavor_extra_specs", (_PRIORITY_NATIVE,)),
    (Source.IMAGE, "image_properties", ((PRIORITY_IMAGE_KEY, parse_priority),)),
)
_PRIORITY_AGGREGATE_KEYS = (_PRIORITY_NATIVE,)


def decide_priority(facts: InstanceFacts, default: int) -> PriorityDecision:
    """The restart priority of one instance: the same sources, in the same
    order, as its recovery (aggregates that disagree: the highest wins)."""
    return _decide(facts, default, _PRIORITY_SOURCES, _PRIORITY_AGGREGATE_KEYS, int,
                   PriorityDecision)


def priority_decided_by_server_or_flavor(facts: InstanceFacts) -> bool:
    """Does the server's metadata or its flavor set its restart priority?"""
    notes: list[str] = []
    return any(_lookup(getattr(facts, attr) or {}, keys, source.value, notes)
               for source, attr, keys in _PRIORITY_SOURCES[:2])
