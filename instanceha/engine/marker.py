"""The durable marker that instanceha keeps in Nova.

When instanceha acts on a compute host it disables that host's nova-compute
service with a ``disabled_reason`` that records what it did. The reason is
the recovery's durable state: a controller that restarts, or a new leader,
reads it back from Nova and resumes instead of fencing again. One format,
encoded and decoded only here::

    instanceha:v1:fenced;token=42;at=2026-11-21T17:30:05Z
    instanceha:v1:recovering;token=42;at=2026-11-21T17:30:09Z;spares=compute7
    instanceha:v1:reserved;at=2026-11-21T08:00:00Z;note=spare for aggregate rack-3

* ``instanceha:`` prefix: a reason without it is not ours. ``decode`` returns
  None for it, so a host an operator disabled for maintenance is left alone.
* ``v1``: the format version. A newer version is still decoded as far as it
  is understood (unknown fields are ignored), never mistaken for a foreign one.
* fields are ``;``-separated ``key=value`` pairs (ISO 8601 times contain ``:``).
  ``token`` is the fencing token of the recovery; ``at`` when the state was
  entered (UTC, whole seconds); ``spares`` the reserved spare hosts this
  recovery enabled as evacuation targets, oldest first (``,``-separated; a
  new leader resumes with the last one); ``waiting`` how many servers wait
  on the host for room (a recovery that resumes only evacuates); ``note``
  free text for humans.

Nova limits ``disabled_reason`` to 255 characters; ``encode`` trims the note
(then drops the oldest spares) to fit and never emits anything longer.

Pure: no I/O, no clock. The caller passes the time.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re

PREFIX = "instanceha:"
VERSION = 1
MAX_LENGTH = 255  # nova's services.disabled_reason column

_HEAD = re.compile(r"^instanceha:v(?P<version>\d+):(?P<state>[A-Za-z_-]*)\s*(?:;(?P<fields>.*))?$",
                   re.DOTALL)
_NOTE_BAD = re.compile(r"[;\r\n\t]+")
_HOST_OK = re.compile(r"^[^;,=\s]+$")


class MarkerState(enum.Enum):
    """What instanceha last did to a host, as recorded in Nova."""

    FENCED = "fenced"  # powered off and forced down; instances not yet moved
    RECOVERING = "recovering"  # evacuation of its instances in progress
    RECOVERED = "recovered"  # every instance handled; waiting for the host to return
    HELD = "held"  # kept disabled for an operator (flapping, failed recovery)
    RESERVED = "reserved"  # a spare host, enabled on demand as an evacuation target
    UNKNOWN = "unknown"  # ours (prefix), but a state this version does not know


@dataclasses.dataclass(frozen=True)
class Marker:
    state: MarkerState
    token: int | None = None
    at: datetime.datetime | None = None
    note: str = ""
    version: int = VERSION
    raw: str = ""  # the reason as read from Nova (decode only)
    spares: tuple[str, ...] = ()  # spare hosts enabled as targets, oldest first
    waiting: int = 0  # servers left on the host for lack of room, sent when room appears

    @property
    def known(self) -> bool:
        return self.state is not MarkerState.UNKNOWN


def is_ours(reason: str | None) -> bool:
    return reason is not None and reason.strip().startswith(PREFIX)


def _format_time(at: datetime.datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("marker time must be timezone-aware")
    at = at.astimezone(datetime.timezone.utc).replace(microsecond=0)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def encode(state: MarkerState, at: datetime.datetime | None = None, token: int | None = None,
           note: str = "", spares: tuple[str, ...] | list[str] = (), waiting: int = 0) -> str:
    """The ``disabled_reason`` text for a state (at most 255 characters)."""
    if state is MarkerState.UNKNOWN:
        raise ValueError("cannot encode the UNKNOWN marker state")
    if token is not None and (isinstance(token, bool) or not isinstance(token, int) or token < 0):
        raise ValueError(f"marker token must be a non-negative int, got {token!r}")
    bad = [h for h in spares if not isinstance(h, str) or not _HOST_OK.match(h)]
    if bad:
        raise ValueError(f"marker spares must be host names without ';,=' or spaces: {bad!r}")
    text = f"{PREFIX}v{VERSION}:{state.value}"
    if token is not None:
        text += f";token={token}"
    if at is not None:
        text += f";at={_format_time(at)}"
    if isinstance(waiting, bool) or not isinstance(waiting, int) or waiting < 0:
        raise ValueError(f"marker waiting must be a non-negative int, got {waiting!r}")
    if waiting:
        text += f";waiting={waiting}"
    spares = list(spares)
    while spares and len(text) + len(";spares=") + len(",".join(spares)) > MAX_LENGTH:
        spares.pop(0)  # the newest spare is the one a new leader resumes with
    if spares:
        text += ";spares=" + ",".join(spares)
    note = _NOTE_BAD.sub(" ", note or "").strip()
    if note:
        room = MAX_LENGTH - len(text) - len(";note=")
        if room > 0:
            text += f";note={note[:room]}"
    return text


def _parse_time(value: str) -> datetime.datetime | None:
    try:
        at = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.timezone.utc)
    return at


def decode(reason: str | None) -> Marker | None:
    """The marker in a ``disabled_reason``; None when the reason is not ours.

    Tolerant: a reason that starts with our prefix is always ours, even when
    garbled (then its state is UNKNOWN and the caller treats the host with
    care), and a bad field is dropped rather than failing the whole marker.
    """
    if reason is None or not is_ours(reason):
        return None
    raw = reason.strip()
    m = _HEAD.match(raw)
    if not m:
        return Marker(state=MarkerState.UNKNOWN, version=0, raw=raw)
    version = int(m.group("version"))
    try:
        state = MarkerState(m.group("state").lower())
    except ValueError:
        state = MarkerState.UNKNOWN
    fields: dict[str, str] = {}
    for part in (m.group("fields") or "").split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    token = None
    if fields.get("token", "").isdigit():
        token = int(fields["token"])
    at = _parse_time(fields["at"]) if "at" in fields else None
    spares = tuple(h for h in (x.strip() for x in fields.get("spares", "").split(","))
                   if h and _HOST_OK.match(h))
    waiting = int(fields["waiting"]) if fields.get("waiting", "").isdigit() else 0
    return Marker(state=state, token=token, at=at, note=fields.get("note", ""),
                  version=version, raw=raw, spares=spares, waiting=waiting)
