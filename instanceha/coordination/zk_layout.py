"""The tree under ``<root>`` (layout 2) and the kind (ACL) of every node.

::

  <root>                           tree    made by the first controller
  <root>/layout                    layout  {"version": 2, "grant": {...}}: the
                                           controller and operator ids agents grant
  <root>/hosts                     hosts
  <root>/hosts/<host>              slot    provisioned by a controller; the agent writes
                                           its planned stop and first join here
  <root>/hosts/<host>/member       own     ephemeral, by the agent: its capabilities;
                                           the session that owns it is the host's
                                           incarnation
  <root>/hosts/<host>/e-<seq>      event   persistent sequential, by the agent: a guest
                                           failure, deleted by the leader once handled
  <root>/live                      index
  <root>/live/<host>@<seq>         own     ephemeral sequential, by the agent: "this
                                           session holds <host>'s membership"
  <root>/stalls                    index
  <root>/stalls/<host>@<seq>       own     ephemeral sequential, by the agent's loop
                                           watchdog: {"stalled_for": s} or {} (cleared)
  <root>/doorbell                  index
  <root>/doorbell/<host>@<seq>     bell    persistent sequential, by the agent with each
                                           guest failure (same transaction)
  <root>/history/<host>            tree    the host's recent fences (flap damping)
  <root>/control/controller        tree    the leader's switches (safety hold)
  <root>/control/operator          operator  the operators' switches (pause, override,
                                           attestations)
  <root>/status                    tree    the leader's latest view (a summary)
  <root>/status/hosts-<g>-<i>      tree    its per-host part, in chunks (``zk_control``)
  <root>/election/c-<seq>          tree    controllers' candidates
  <root>/incidents/...             tree    the incident journal
  <root>/guest-restarts/<id>       tree    restarts requested per instance

Why an index beside the slots: the controller follows every member with one
children watch on ``live`` and every stall with one on ``stalls``, so a
connection loss or a new session costs two re-lists, not a read per host
(issue 26). ZooKeeper cannot restrict the *names* created under a shared
parent, so an index entry proves nothing by itself: the controller trusts it
only after checking that the member node in the host's own slot, which only
that host's identity can create, is owned by the same session
(``zk_view``). A forged entry is ignored and reported as tampering.
"""

from __future__ import annotations

import re

from kazoo import exceptions as kz_exc

from instanceha import exceptions
from instanceha.coordination.zk_acl import AclModel
from instanceha.coordination.zk_codec import dumps, loads

VERSION = 2

LAYOUT = "layout"
HOSTS = "hosts"
LIVE = "live"
STALLS = "stalls"
DOORBELL = "doorbell"
HISTORY = "history"
CONTROL = "control"
STATUS = "status"
ELECTION = "election"
INCIDENTS = "incidents"
RESTARTS = "guest-restarts"
MEMBER = "member"
EVENT_PREFIX = "e-"
CONTROLLER_NODE = "controller"
OPERATOR_NODE = "operator"

DIRS = {HOSTS: "hosts", LIVE: "index", STALLS: "index", DOORBELL: "index", HISTORY: "hosts",
        CONTROL: "tree", ELECTION: "tree", INCIDENTS: "tree", RESTARTS: "tree"}
"""Top-level directories and their kinds (made by the first controller)."""

_INDEXED = re.compile(r"^(?P<host>[A-Za-z0-9][A-Za-z0-9._-]*)@(?P<seq>\d{10})$")
_STATUS_CHUNK = re.compile(r"^hosts-[0-9a-f]{8}-\d{4}$")


def index_prefix(host: str) -> str:
    return f"{host}@"


def status_chunk(generation: str, index: int) -> str:
    """The name of chunk ``index`` of status publication ``generation`` (8 hex)."""
    return f"hosts-{generation}-{index:04d}"


def parse_index(name: str) -> tuple[str, int] | None:
    """``compute1@0000000042`` -> (``compute1``, 42); None for any other name."""
    m = _INDEXED.match(name)
    return (m.group("host"), int(m.group("seq"))) if m else None


def kind_of(parts: tuple[str, ...]) -> str | None:
    """The kind of the node at ``<root>/<parts...>`` (None: not a node of the
    layout, e.g. something written by hand)."""
    n = len(parts)
    if n == 0:
        return "tree"
    top = parts[0]
    if n == 1:
        if top == LAYOUT:
            return "layout"
        if top == STATUS:
            return "tree"
        return DIRS.get(top)
    if top == HOSTS:
        if n == 2:
            return "slot"
        if n == 3 and parts[2] == MEMBER:
            return "own"
        if n == 3 and parts[2].startswith(EVENT_PREFIX):
            return "event"
        return None
    if top == STATUS and n == 2:
        return "tree" if _STATUS_CHUNK.match(parts[1]) else None
    if top in (LIVE, STALLS) and n == 2:
        return "own" if parse_index(parts[1]) else None
    if top == DOORBELL and n == 2:
        return "bell" if parse_index(parts[1]) else None
    if top == CONTROL and n == 2:
        return {CONTROLLER_NODE: "tree", OPERATOR_NODE: "operator"}.get(parts[1])
    if top in (HISTORY, ELECTION, RESTARTS) and n == 2:
        return "tree"
    if top == INCIDENTS:
        return "tree"
    return None


def host_of(parts: tuple[str, ...]) -> str | None:
    """The host whose identity a node of kind slot/own/event names."""
    if len(parts) >= 2 and parts[0] == HOSTS:
        return parts[1]
    if len(parts) == 2 and parts[0] in (LIVE, STALLS, DOORBELL):
        parsed = parse_index(parts[1])
        return parsed[0] if parsed else None
    return None


class Layout:
    """Creates (controllers) or checks (everyone) the tree under the root."""

    def __init__(self, client, root: str, acls: AclModel, where: str) -> None:
        self.client = client
        self.root = root
        self.acls = acls
        self.where = where

    def path(self, *parts: str) -> str:
        return "/".join((self.root,) + parts)

    def _fail(self, reason: str) -> exceptions.LayoutMismatch:
        return exceptions.LayoutMismatch(root=self.root, where=self.where, reason=reason)

    def read(self) -> tuple[int | None, dict]:
        """The tree's layout version (None when the root does not exist yet) and
        the layout node's data."""
        try:
            raw, _ = self.client.get(self.path(LAYOUT))
        except kz_exc.NoNodeError:
            if self.client.exists(self.root) is None:
                return None, {}
            return 1, {}  # an instanceha tree from before layouts were versioned
        except kz_exc.NoAuthError:
            raise self._fail(f"{self.acls.identity} may not read {self.path(LAYOUT)}: the "
                             "tree belongs to other credentials (another key, or another "
                             "cloud using the same root_path)") from None
        data = loads(raw)
        version = data.get("version")
        return (version if isinstance(version, int) else 0), data

    def check(self) -> None:
        """Agents and operators: the tree exists and has this release's layout;
        agents learn which identities to grant on what they create."""
        version, data = self.read()
        if version is None:
            raise exceptions.CoordinationError(
                reason=f"{self.root} does not exist yet at {self.where}: no controller has "
                "initialised the coordination tree")
        self._check_version(version)
        if not self.acls.open:
            grant = data.get("grant")
            self.acls.learn_admins(grant if isinstance(grant, dict) else {})

    def _check_version(self, version: int) -> None:
        if version == VERSION:
            return
        if version < VERSION:
            raise self._fail(
                f"it has layout {version} (an older instanceha, open to anyone: no "
                f"authentication, no ACLs); this release needs layout {VERSION}. Stop every "
                "instanceha daemon, then either remove the old tree (its incidents and "
                "registry are lost; every host re-registers) or set [coordination] "
                "root_path to a new root")
        raise self._fail(f"it has layout {version}, newer than this release knows "
                         f"({VERSION}): upgrade this daemon")

    def ensure(self) -> None:
        """Controllers: create the root, its directories and the layout mark
        (each with its ACL) where missing; refuse a tree of another layout."""
        version, data = self.read()
        if version is not None and version != VERSION:
            self._check_version(version)
        self._create(self.root, "tree")
        for name, kind in DIRS.items():
            self._create(self.path(name), kind)
        self._create(self.path(CONTROL, CONTROLLER_NODE), "tree")
        self._create(self.path(CONTROL, OPERATOR_NODE), "operator")
        want: dict[str, object] = {"version": VERSION}
        if not self.acls.open:
            want["grant"] = self.acls.grants()
        if version is None or data != want:
            try:
                self.client.set(self.path(LAYOUT), dumps(want))
            except kz_exc.NoNodeError:
                self._create(self.path(LAYOUT), "layout", dumps(want))

    def _create(self, path: str, kind: str, data: bytes = b"") -> None:
        try:
            self.client.create(path, data, acl=self.acls.acl(kind))
        except kz_exc.NodeExistsError:
            pass
