"""``instanceha coordination check``: every node of the tree against the ACL model.

Walks ``<root>`` breadth first (reads pipelined, a level at a time) with the
controllers' credentials, and reports each node whose ACL grants an identity
more than its kind allows (``zk_acl.TABLE``), names an identity the model does
not know (``world:anyone`` included), or is not a node of the layout at all.
A narrower ACL is not reported: nothing is wider than the model.
"""

from __future__ import annotations

import typing

from kazoo import exceptions as kz_exc

from instanceha.coordination import zk_acl
from instanceha.coordination import zk_layout as L


class Finding(typing.NamedTuple):
    path: str
    kind: str | None
    finding: str


def audit_tree(coord) -> tuple[list[Finding], int]:
    """(findings, number of nodes walked) for a started ZooKeeperCoordinator
    holding the controllers' credentials."""
    client, root, acls = coord.client, coord.root_path, coord.acls
    findings: list[Finding] = []
    walked = 0
    level: list[tuple[str, ...]] = [()]
    while level:
        acl_reads = {parts: client.get_acls_async(_path(root, parts)) for parts in level}
        kids = {parts: client.get_children_async(_path(root, parts)) for parts in level}
        nxt: list[tuple[str, ...]] = []
        for parts in level:
            path = _path(root, parts)
            try:
                actual, _ = acl_reads[parts].get()
                children = kids[parts].get()
            except kz_exc.NoNodeError:
                continue  # gone meanwhile
            walked += 1
            kind = L.kind_of(parts)
            if kind is None:
                findings.append(Finding(path, None, "not a node of layout "
                                        f"{L.VERSION} (written by hand?)"))
                expected = []
            else:
                try:
                    expected = acls.acl(kind, L.host_of(parts))
                except ValueError as e:
                    findings.append(Finding(path, kind, f"no model for it: {e}"))
                    expected = []
            for text in zk_acl.wider(actual, expected):
                findings.append(Finding(path, kind, text))
            nxt.extend(parts + (c,) for c in sorted(children))
        level = nxt
    return findings, walked


def _path(root: str, parts: tuple[str, ...]) -> str:
    return "/".join((root,) + parts)
