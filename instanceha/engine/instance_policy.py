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
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping

KEY = "instanceha:recovery"
IMAGE_KEY = "instanceha_recovery"  # glance style: flavor 'a:b' is image 'a_b'
MASAKARI_KEY = "HA_Enabled"  # Masakari's server metadata switch
EVACUABLE_KEY = "evacuable"  # Red Hat InstanceHA's flavor / image / aggregate tag

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


class Recovery(enum.Enum):
    EVACUATE = "evacuate"  # rebuild it on another host
    NOTIFY = "notify"  # only tell its owner (custom recovery, e.g. NFV)
    IGNORE = "ignore"  # leave it where it is

    @classmethod
    def parse(cls, value: object) -> Recovery | None:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            return None


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
class Decision:
    recovery: Recovery
    source: Source
    key: str | None  # the key that decided (None for the default)
    value: str | None  # its value as set
    notes: tuple[str, ...] = ()  # invalid settings skipped, conflicts

    @property
    def reason(self) -> str:
        return _reason(self.recovery, self.source, self.key, self.value, self.notes)


def _reason(outcome, source, key, value, notes) -> str:
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


def _lookup(values: Mapping[str, object], keys: Iterable[tuple[str, object]], where: str,
            notes: list[str]) -> tuple[Recovery, str, str] | None:
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


def decide(facts: InstanceFacts, default: Recovery) -> Decision:
    return _decide(facts, default, _SOURCES, _AGGREGATE_KEYS, _STRENGTH, Decision)


def decided_by_server_or_flavor(facts: InstanceFacts) -> bool:
    """Does the server's metadata or its flavor decide its recovery? Then the
    image and the aggregates (sources 3 and 4) cannot change it, and the
    caller need not read them."""
    notes: list[str] = []
    return any(_lookup(getattr(facts, attr) or {}, keys, source.value, notes)
               for source, attr, keys in _SOURCES[:2])


def _decide(facts, default, sources, aggregate_keys, strength, result):
    """The recovery of one instance, with the source that decided it."""
    """The outcome of one instance, with the source that decided it."""
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
        name, recovery, key, value = max(votes, key=lambda v: strength[v[1]])
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
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            return None


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
