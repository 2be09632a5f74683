"""The one JSON codec of the coordination store's node data.

Compact, sorted JSON (a node's bytes change only when its content does, so a
compare-and-set merge that changes nothing writes nothing). Reading never
raises: data that is not a JSON object decodes as ``{"_undecodable": True}``,
which every reader treats as "no usable fields" (a node written by hand, or
by a newer release, never crashes a controller).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

UNDECODABLE = "_undecodable"


def dumps(data: Mapping[str, object]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def loads(raw: bytes | None) -> dict:
    if not raw:
        return {}
    try:
        value = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return {UNDECODABLE: True}
    return value if isinstance(value, dict) else {UNDECODABLE: True}
