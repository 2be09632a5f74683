"""Coordination identities and credentials files: derivation, refusal, no leak."""

import os

import pytest

from instanceha import exceptions
from instanceha.coordination import credentials as cr
from instanceha.secret import Secret

KEY = Secret(cr.new_key())


def test_every_identity_derives_from_the_one_key_and_differs():
    ctl = cr.for_controller((KEY,))
    agent = cr.for_agent(KEY, "compute1")
    other = cr.for_agent(KEY, "compute2")
    op = cr.for_operator(KEY)
    ids = [i.digest_id for c in (ctl, agent, other, op) for i in c.identities]
    assert len(set(ids)) == len(ids) - 1  # both agents share only the agents' identity
    assert ctl.derived(cr.agent_user("compute1")) == (agent.identities[0].digest_id,)
    assert ctl.derived(cr.AGENTS_USER) == (agent.identities[1].digest_id,)
    assert cr.for_agent(Secret(cr.new_key()), "compute1").identities[0].digest_id != \
        agent.identities[0].digest_id


def test_a_digest_id_is_not_the_password_and_nothing_shows_it():
    agent = cr.for_agent(KEY, "compute1")
    own = agent.identities[0]
    assert own.password.reveal() not in own.digest_id
    assert own.password.reveal() not in repr(agent) + str(agent) + repr(own)
    assert own.auth() == ("digest", f"instanceha-agent@compute1:{own.password.reveal()}")


@pytest.mark.parametrize("host", ["", "a/b", "a:b", "a@b", "-x", "x" * 300, None])
def test_unusable_host_names_are_refused(host):
    with pytest.raises(ValueError):
        cr.agent_user(host)


@pytest.mark.parametrize("creds", [cr.for_controller((KEY, Secret(cr.new_key()))),
                                   cr.for_agent(KEY, "compute1"), cr.for_operator(KEY)])
def test_a_written_file_loads_back(tmp_path, creds):
    path = str(tmp_path / "c.yaml")
    cr.write(path, creds)
    assert os.stat(path).st_mode & 0o777 == 0o600
    loaded = cr.load(path)
    assert (loaded.role, loaded.host, loaded.identities, loaded.keys) == \
        (creds.role, creds.host, creds.identities, creds.keys)


def _file(tmp_path, text, mode=0o600):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


SECRET = "s3cr3t-value-never-shown"


@pytest.mark.parametrize("text, mode, reason", [
    (f"role: operator\npassword: {SECRET}\n", 0o644, "others may access it (mode 0644)"),
    (f"role: operator\npassword: {SECRET}\n", 0o606, "others may access it (mode 0606)"),
    (f"role: operator\npassword: [{SECRET}\n", 0o600, "is not valid YAML (line "),
    (f"- {SECRET}\n", 0o600, "is not a mapping"),
    (f"role: admin\npassword: {SECRET}\n", 0o600, "'role' must be one of"),
    ("role: operator\n", 0o600, "'password' is missing or empty (role operator)"),
    (f"role: agent\npassword: {SECRET}\nagents_password: x\n", 0o600, "'host' is missing"),
    (f"role: agent\nhost: a/b\npassword: {SECRET}\nagents_password: x\n", 0o600,
     "not a usable host name"),
    (f"role: controller\nkey: {SECRET}\n", 0o600, "a key is at least 32 bytes"),
    (f"role: controller\nkey: {cr.new_key()}\nprevious_keys: {SECRET}\n", 0o600,
     "'previous_keys' must be a list"),
])
def test_a_bad_file_is_refused_naming_the_file_never_its_content(tmp_path, text, mode, reason):
    path = _file(tmp_path, text, mode)
    with pytest.raises(exceptions.CredentialsError) as e:
        cr.load(path)
    assert reason in str(e.value) and path in str(e.value)
    assert SECRET not in str(e.value)


def test_group_readable_is_allowed(tmp_path):
    assert cr.load(_file(tmp_path, f"role: operator\npassword: {SECRET}\n", 0o640)).role == \
        "operator"


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(exceptions.CredentialsError, match="cannot be read"):
        cr.load(str(tmp_path / "nope.yaml"))


def test_only_a_controller_derives():
    with pytest.raises(ValueError):
        cr.for_operator(KEY).derived(cr.CONTROLLER_USER)
