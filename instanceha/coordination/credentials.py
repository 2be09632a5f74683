"""Who may talk to the coordination store, and how each proves it.

Identities (ZooKeeper ``digest`` users; every ACL names them):

============================  ===========================================================
``instanceha-controller``     every controller: administers the whole tree
``instanceha-operator``       the operators' CLI: writes its own control node, reads the
                              rest, may forget a decommissioned host
``instanceha-agent@<host>``   one per compute host: its own slot ``hosts/<host>`` (its
                              membership, planned stop, guest failures), nothing else
``instanceha-agents``         shared by every agent: may only *add* an entry to the
                              shared indexes (``live``, ``stalls``, ``doorbell``), which
                              controllers verify against the host's own slot
============================  ===========================================================

Every password is derived from one key that only the controllers hold
(``HMAC-SHA256(key, identity)``): controllers can write the ACL of any host's
slot without a list of hosts, and an operator provisions a new compute node
with ``instanceha coordination credentials agent HOST`` on a controller. A
rotation lists the old key under ``previous_keys``: controllers authenticate
with both and grant both in every ACL they write until the old key is dropped.

A credentials file is YAML, refused when others may read or write it, and never
quoted in an error::

    role: controller            role: agent                 role: operator
    key: <base64url>            host: compute1              password: <...>
    previous_keys: []           password: <...>
                                agents_password: <...>
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import re
import secrets
import stat

import yaml

from instanceha import exceptions
from instanceha.secret import Secret

CONTROLLER = "controller"
AGENT = "agent"
OPERATOR = "operator"
ROLES = (CONTROLLER, AGENT, OPERATOR)

CONTROLLER_USER = "instanceha-controller"
OPERATOR_USER = "instanceha-operator"
AGENTS_USER = "instanceha-agents"
AGENT_PREFIX = "instanceha-agent@"

HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_CONTEXT = b"instanceha/zookeeper/v1\x00"


def agent_user(host: str) -> str:
    check_host(host)
    return AGENT_PREFIX + host


def check_host(host: str) -> str:
    """A host name usable as a znode name and a digest user (no ``/``, ``:``, ``@``)."""
    if not isinstance(host, str) or not HOST_NAME.match(host):
        raise ValueError(f"not a usable host name: {host!r} (letters, digits, '.', '_', '-')")
    return host


def new_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _key_bytes(key: Secret) -> bytes:
    text = key.reveal()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raw = b""
    if len(raw) < 32:
        raise ValueError("a key is at least 32 bytes, base64url-encoded "
                         "(make one with 'instanceha coordination credentials new-key')")
    return raw


def derive_password(key: Secret, user: str) -> Secret:
    mac = hmac.new(_key_bytes(key), _CONTEXT + user.encode(), hashlib.sha256).digest()
    return Secret(base64.urlsafe_b64encode(mac).decode().rstrip("="))


@dataclasses.dataclass(frozen=True)
class Identity:
    """A ZooKeeper digest user and its password."""

    user: str
    password: Secret = dataclasses.field(repr=False)

    @property
    def digest_id(self) -> str:
        """What an ACL names: ``user:base64(sha1(user:password))`` (not the password)."""
        raw = hashlib.sha1(f"{self.user}:{self.password.reveal()}".encode()).digest()
        return f"{self.user}:{base64.b64encode(raw).decode()}"

    def auth(self) -> tuple[str, str]:
        """The ``auth_data`` entry the client sends (over TLS)."""
        return ("digest", f"{self.user}:{self.password.reveal()}")


@dataclasses.dataclass(frozen=True)
class Credentials:
    role: str
    identities: tuple[Identity, ...]
    """What this client authenticates as, every one added to its session."""
    host: str | None = None
    keys: tuple[Secret, ...] = dataclasses.field(default=(), repr=False)
    """Controllers only: the current key first, then keys being rotated out."""
    source: str = "<memory>"

    @property
    def name(self) -> str:
        """The identity that names this client in logs and records."""
        return self.identities[0].user

    def derived(self, user: str) -> tuple[str, ...]:
        """Controllers: the digest ids of ``user`` under every key held."""
        if not self.keys:
            raise ValueError("only a controller's credentials derive other identities")
        return tuple(Identity(user, derive_password(k, user)).digest_id for k in self.keys)


def for_controller(keys: tuple[Secret, ...], source: str = "<memory>") -> Credentials:
    return Credentials(CONTROLLER, tuple(Identity(CONTROLLER_USER, derive_password(k,
                                                                                CONTROLLER_USER))
                                         for k in keys), keys=keys, source=source)


def for_agent(key: Secret, host: str, source: str = "<memory>") -> Credentials:
    user = agent_user(host)
    return Credentials(AGENT, (Identity(user, derive_password(key, user)),
                               Identity(AGENTS_USER, derive_password(key, AGENTS_USER))),
                       host=host, source=source)


def for_operator(key: Secret, source: str = "<memory>") -> Credentials:
    return Credentials(OPERATOR, (Identity(OPERATOR_USER, derive_password(key, OPERATOR_USER)),),
                       source=source)


# -- files -------------------------------------------------------------------------

def render(creds: Credentials) -> str:
    """The YAML text of a credentials file (write it with mode 0600)."""
    data: dict[str, object]
    if creds.role == CONTROLLER:
        data = {"role": CONTROLLER, "key": creds.keys[0].reveal(),
                "previous_keys": [k.reveal() for k in creds.keys[1:]]}
    elif creds.role == AGENT:
        own, shared = creds.identities
        data = {"role": AGENT, "host": creds.host, "password": own.password.reveal(),
                "agents_password": shared.password.reveal()}
    else:
        data = {"role": OPERATOR, "password": creds.identities[0].password.reveal()}
    head = ("# instanceha coordination credentials: keep private (mode 0600 or 0640, never "
            "readable by others)\n")
    return head + yaml.safe_dump(data, sort_keys=False)


def write(path: str, creds: Credentials) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(render(creds))
    os.chmod(path, 0o600)


def _fail(path: str, reason: str) -> exceptions.CredentialsError:
    return exceptions.CredentialsError(file=path, reason=reason)


def load(path: str) -> Credentials:
    """Read and check a credentials file. Raises CredentialsError naming the file
    and the key at fault; never quotes the file's content."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise _fail(path, f"cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, "is not a regular file")
    if st.st_mode & 0o007:
        raise _fail(path, f"holds passwords and others may access it (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}): chmod o-rwx {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise _fail(path, f"cannot be read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise _fail(path, f"is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise _fail(path, "is not a mapping of role, key/password...")
    role = data.get("role")
    if role not in ROLES:
        raise _fail(path, f"'role' must be one of {', '.join(ROLES)}")

    def text(name: str) -> Secret:
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise _fail(path, f"'{name}' is missing or empty (role {role})")
        return Secret(value.strip())

    try:
        if role == CONTROLLER:
            previous = data.get("previous_keys") or []
            if not isinstance(previous, list) or not all(isinstance(k, str) for k in previous):
                raise _fail(path, "'previous_keys' must be a list of keys")
            keys = (text("key"),) + tuple(Secret(k) for k in previous)
            for k in keys:
                _key_bytes(k)
            return for_controller(keys, source=path)
        if role == AGENT:
            host = data.get("host")
            if not isinstance(host, str):
                raise _fail(path, "'host' is missing (role agent)")
            user = agent_user(host)
            return Credentials(AGENT, (Identity(user, text("password")),
                                       Identity(AGENTS_USER, text("agents_password"))),
                               host=host, source=path)
        return Credentials(OPERATOR, (Identity(OPERATOR_USER, text("password")),), source=path)
    except ValueError as e:
        raise _fail(path, str(e)) from None
