"""Least-privilege ACLs: which identity may do what on each kind of node.

Every node instanceha creates gets the ACL of its *kind* (see
``zk_layout.KINDS`` for which path is which kind). Permissions (ZooKeeper's
r w c d a): CREATE and DELETE of a child are checked on the parent, so the
layout gives each host a parent of its own (its slot) and the shared indexes
grant only CREATE, never READ or DELETE, to the agents::

  kind        controller  operator  agent@<host>  agents (shared)
  tree        rwcda       r         -             -
  layout      rwcda       r         -             r
  index       rwcda       r         -             c
  hosts       rwcda       rd        -             -
  slot        rwcda       rd        rwcd          -
  own         rwcda       r         rw            -
  event       rwcda       r         r             -
  bell        rwcda       -         -             -
  operator    rwcda       rw        -             -

``world:anyone`` appears nowhere: a client without credentials, or with a
wrong password, reads and writes nothing of instanceha's tree (ZooKeeper's
own ``/zookeeper`` is untouched). Only controllers hold ADMIN, so no one else
can change an ACL. Without credentials (``[coordination] insecure = true``,
test beds only) every kind is open to anyone.

Agents do not hold the key: the controller and operator entries they put on
the nodes they create are published by the controllers in the layout node
(``grants()``, read by ``learn_admins``; ZooKeeper masks the digests of an ACL
read without ADMIN), so a key rotation needs nothing new on the compute nodes
but their own file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kazoo.security import ACL, OPEN_ACL_UNSAFE, Id, Permissions

from instanceha.coordination import credentials as cr

R, W, C, D, A = (Permissions.READ, Permissions.WRITE, Permissions.CREATE,
                 Permissions.DELETE, Permissions.ADMIN)
ALL = Permissions.ALL

# kind -> (operator perms, agent@host perms, shared agents perms); controllers hold ALL
TABLE: dict[str, tuple[int, int, int]] = {
    "tree": (R, 0, 0),
    "layout": (R, 0, R),
    "index": (R, 0, C),
    "hosts": (R | D, 0, 0),
    "slot": (R | D, R | W | C | D, 0),
    "own": (R, R | W, 0),
    "event": (R, R, 0),
    "bell": (0, 0, 0),
    "operator": (R | W, 0, 0),
}

PERM_LETTERS = ((R, "r"), (W, "w"), (C, "c"), (D, "d"), (A, "a"))


def letters(perms: int) -> str:
    return "".join(ch for bit, ch in PERM_LETTERS if perms & bit) or "-"


def digest(ident: str, perms: int) -> ACL:
    return ACL(perms, Id("digest", ident))


class AclModel:
    """The ACL of each node kind for one client's credentials (None: open)."""

    def __init__(self, creds: cr.Credentials | None) -> None:
        self.creds = creds
        self.open = creds is None
        self._controllers: tuple[str, ...] = ()
        self._operators: tuple[str, ...] = ()
        if creds is not None and creds.role == cr.CONTROLLER:
            self._controllers = creds.derived(cr.CONTROLLER_USER)
            self._operators = creds.derived(cr.OPERATOR_USER)

    # -- what this client sends ----------------------------------------------------
    def auth_data(self) -> list[tuple[str, str]]:
        return [] if self.creds is None else [i.auth() for i in self.creds.identities]

    @property
    def identity(self) -> str:
        return "anonymous (insecure)" if self.creds is None else self.creds.name

    # -- who is who --------------------------------------------------------------------
    def grants(self) -> dict[str, list[str]]:
        """Controllers: the digest ids agents grant on what they create."""
        return {"controller": list(self._controllers), "operator": list(self._operators)}

    def learn_admins(self, grants: Mapping[str, object]) -> None:
        """Agents: the controller and operator ids the controllers published."""
        def ids(role: str, user: str) -> tuple[str, ...]:
            value = grants.get(role)
            return tuple(i for i in value if isinstance(i, str) and i.startswith(user + ":")) \
                if isinstance(value, list) else ()

        self._controllers = ids("controller", cr.CONTROLLER_USER)
        self._operators = ids("operator", cr.OPERATOR_USER)

    @property
    def knows_admins(self) -> bool:
        return self.open or bool(self._controllers)

    def _agent_ids(self, host: str) -> tuple[str, ...]:
        assert self.creds is not None
        if self.creds.keys:
            return self.creds.derived(cr.agent_user(host))
        own = [i.digest_id for i in self.creds.identities if i.user == cr.agent_user(host)]
        if not own:
            raise ValueError(f"{self.creds.name} cannot write an ACL for host {host}")
        return tuple(own)

    def _shared_agent_ids(self) -> tuple[str, ...]:
        assert self.creds is not None
        if self.creds.keys:
            return self.creds.derived(cr.AGENTS_USER)
        return tuple(i.digest_id for i in self.creds.identities if i.user == cr.AGENTS_USER)

    # -- ACLs ------------------------------------------------------------------------------
    def acl(self, kind: str, host: str | None = None) -> list[ACL]:
        if self.open:
            return list(OPEN_ACL_UNSAFE)
        if not self._controllers:
            raise ValueError("the controllers' identity is not known yet (learn_admins)")
        operator, agent, shared = TABLE[kind]
        out = [digest(i, ALL) for i in self._controllers]
        if operator:
            out += [digest(i, operator) for i in self._operators]
        if agent:
            if host is None:
                raise ValueError(f"an ACL of kind {kind} names its host")
            out += [digest(i, agent) for i in self._agent_ids(host)]
        if shared:
            out += [digest(i, shared) for i in self._shared_agent_ids()]
        return out


def wider(actual: Iterable[ACL], expected: Iterable[ACL]) -> list[str]:
    """What ``actual`` grants beyond ``expected``: one text per excess entry
    (an identity the model does not know, or more permissions than it allows)."""
    allowed: dict[tuple[str, str], int] = {}
    for a in expected:
        key = (a.id.scheme, a.id.id)
        allowed[key] = allowed.get(key, 0) | a.perms
    out = []
    for a in actual:
        key = (a.id.scheme, a.id.id)
        extra = a.perms & ~allowed.get(key, 0)
        if extra:
            who = f"{a.id.scheme}:{a.id.id.split(':', 1)[0]}"
            out.append(f"{who} has {letters(extra)} beyond the model "
                       f"({letters(allowed.get(key, 0))})")
    return out
