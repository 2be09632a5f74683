"""What to do with one instance of a failed host: evacuate, notify, or ignore.

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
        if self.source is Source.DEFAULT:
            text = f"{self.recovery.value}: {self.source.value}"
        else:
            text = f"{self.recovery.value}: {self.source.value} {self.key}={self.value}"
        if self.notes:
            text += " (" + "; ".join(self.notes) + ")"
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
    """The recovery of one instance, with the source that decided it."""
    notes: list[str] = []
    for source, attr, keys in _SOURCES:
        found = _lookup(getattr(facts, attr) or {}, keys, source.value, notes)
        if found:
            recovery, key, value = found
            return Decision(recovery, source, key, value, tuple(notes))

    votes = []
    for name in sorted(facts.aggregates or {}):
        found = _lookup(facts.aggregates[name] or {}, _AGGREGATE_KEYS,
                        f"aggregate {name}", notes)
        if found:
            votes.append((name, *found))
    if votes:
        name, recovery, key, value = max(votes, key=lambda v: _STRENGTH[v[1]])
        if len({v[1] for v in votes}) > 1:
            notes.append("aggregates disagree: " + ", ".join(
                f"{n} {k}={v}" for n, _, k, v in votes) + f"; the strongest ({name}) wins")
        return Decision(recovery, Source.AGGREGATE, key, value, tuple(notes))

    return Decision(default, Source.DEFAULT, None, None, tuple(notes))
