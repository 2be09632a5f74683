"""The ACL model as a table, the layout's kinds, and the view's liveness rule."""

import math

import pytest
from kazoo.security import OPEN_ACL_UNSAFE, Permissions

from instanceha.coordination import credentials as cr
from instanceha.coordination import zk_acl
from instanceha.coordination import zk_layout as L
from instanceha.coordination.base import ALIVE_NOW
from instanceha.coordination.zk_view import liveness
from instanceha.secret import Secret

KEY = Secret(cr.new_key())
CTL = zk_acl.AclModel(cr.for_controller((KEY,)))
R, W, C, D, A = (Permissions.READ, Permissions.WRITE, Permissions.CREATE,
                 Permissions.DELETE, Permissions.ADMIN)


def _perms(acl):
    """{user: perms} of an ACL list."""
    return {a.id.id.split(":", 1)[0]: a.perms for a in acl}


@pytest.mark.parametrize("kind, agent, shared, operator", [
    ("tree", 0, 0, R),
    ("layout", 0, R, R),
    ("index", 0, C, R),
    ("hosts", 0, 0, R | D),
    ("slot", R | W | C | D, 0, R | D),
    ("own", R | W, 0, R),
    ("event", R, 0, R),
    ("bell", 0, 0, 0),
    ("operator", 0, 0, R | W),
])
def test_each_kind_grants_exactly_the_table(kind, agent, shared, operator):
    got = _perms(CTL.acl(kind, "compute1"))
    want = {cr.CONTROLLER_USER: Permissions.ALL}
    for user, perms in ((cr.agent_user("compute1"), agent), (cr.AGENTS_USER, shared),
                        (cr.OPERATOR_USER, operator)):
        if perms:
            want[user] = perms
    assert got == want
    assert all(a.id.scheme == "digest" for a in CTL.acl(kind, "compute1"))  # no world:anyone


def test_only_controllers_hold_admin_anywhere():
    for kind in zk_acl.TABLE:
        admins = {u for u, p in _perms(CTL.acl(kind, "h")).items() if p & A}
        assert admins == {cr.CONTROLLER_USER}, kind


def test_an_agent_grants_what_the_controllers_published():
    agent = zk_acl.AclModel(cr.for_agent(KEY, "compute1"))
    with pytest.raises(ValueError, match="not known yet"):
        agent.acl("own", "compute1")
    agent.learn_admins(CTL.grants())
    assert agent.acl("own", "compute1") == CTL.acl("own", "compute1")
    assert agent.acl("event", "compute1") == CTL.acl("event", "compute1")
    with pytest.raises(ValueError, match="cannot write an ACL for host compute2"):
        agent.acl("own", "compute2")


def test_learn_admins_ignores_what_is_not_an_admin_id():
    agent = zk_acl.AclModel(cr.for_agent(KEY, "compute1"))
    agent.learn_admins({"controller": ["instanceha-agents:xyz", 3, cr.CONTROLLER_USER + ":h"],
                        "operator": "not a list"})
    assert _perms(agent.acl("own", "compute1")) == {
        cr.CONTROLLER_USER: Permissions.ALL, cr.agent_user("compute1"): R | W}


def test_a_rotation_grants_both_keys():
    new = Secret(cr.new_key())
    rotating = zk_acl.AclModel(cr.for_controller((new, KEY)))
    ids = [a.id.id for a in rotating.acl("slot", "compute1")]
    assert CTL.acl("slot", "compute1")[0].id.id in ids and len(ids) == 6


def test_open_mode_is_open_everywhere():
    assert zk_acl.AclModel(None).acl("slot", "x") == list(OPEN_ACL_UNSAFE)


def test_wider_names_extra_rights_and_unknown_identities():
    expected = CTL.acl("own", "compute1")
    assert zk_acl.wider(expected, expected) == []
    assert zk_acl.wider(expected[:1], expected) == []  # narrower is fine
    more = CTL.acl("slot", "compute1")
    assert zk_acl.wider(more, expected) == [
        "digest:instanceha-operator has d beyond the model (r)",
        "digest:instanceha-agent@compute1 has cd beyond the model (rw)"]
    assert zk_acl.wider(OPEN_ACL_UNSAFE, expected) == [
        "world:anyone has rwcda beyond the model (-)"]


@pytest.mark.parametrize("parts, kind, host", [
    ((), "tree", None),
    (("layout",), "layout", None),
    (("hosts",), "hosts", None),
    (("hosts", "c1"), "slot", "c1"),
    (("hosts", "c1", "member"), "own", "c1"),
    (("hosts", "c1", "e-0000000001"), "event", "c1"),
    (("hosts", "c1", "other"), None, "c1"),
    (("live",), "index", None),
    (("live", "c1@0000000003"), "own", "c1"),
    (("live", "c1"), None, None),
    (("stalls", "c1.example@0000000003"), "own", "c1.example"),
    (("doorbell", "c1@0000000003"), "bell", "c1"),
    (("history", "c1"), "tree", None),
    (("control", "operator"), "operator", None),
    (("control", "controller"), "tree", None),
    (("control", "other"), None, None),
    (("status",), "tree", None),
    (("election", "c-0000000001"), "tree", None),
    (("incidents", "i-1", "e-0000000001"), "tree", None),
    (("surprise",), None, None),
])
def test_every_node_of_the_layout_has_its_kind(parts, kind, host):
    assert L.kind_of(parts) == kind
    assert L.host_of(parts) == host


@pytest.mark.parametrize("name, parsed", [
    ("compute1@0000000042", ("compute1", 42)),
    ("a.b-c_d@0000000001", ("a.b-c_d", 1)),
    ("compute1@42", None),
    ("compute1", None),
    ("@0000000001", None),
    ("a/b@0000000001", None),
])
def test_index_names(name, parsed):
    assert L.parse_index(name) == parsed


T = 2.0


@pytest.mark.parametrize("present, stall, lost, first, expected", [
    (True, None, None, 5.0, ALIVE_NOW),                 # a live session
    (True, (1.5, 100.0), None, 5.0, 98.5),              # stalled since 98.5
    (False, None, (100.0, True), 5.0, 98.0),            # expired: silent for T before
    (False, None, (100.0, False), 5.0, 100.0),          # found missing: proves nothing
    (False, (1.5, 99.0), (100.0, True), 5.0, 97.5),     # stalled, then its session ended
    (False, (0.5, 101.0), (100.0, True), 5.0, 100.0),   # never later than the loss
    (False, None, None, 5.0, 5.0),                      # never seen a member here
    (False, None, None, None, None),
])
def test_liveness(present, stall, lost, first, expected):
    got = liveness(present, stall, lost, T, first)
    assert got == expected or (math.isinf(expected or 0) and math.isinf(got))
