"""The agent's coordinator session, kept across a restart of the process.

ZooKeeper does not end a session when its client's connection closes: it
expires it after the session timeout without a packet. A process that dies
(SIGKILL, the OOM killer, an uncaught exception) leaves its session alive for
that long, and a restarted agent that presents the session's id and password
(kazoo's ``client_id``) gets it back with everything it holds: its membership
never vanishes and the controllers see nothing but new capabilities (a new
pid and start time).

The credentials live in a private file (``[agent] session_file``, by default
``/run/instanceha/agent-session.json``: tmpfs, a directory systemd makes for
the agent's user only and keeps across restarts). Rules:

* written 0600 by the agent's user, atomically (a new file renamed over the
  old one), whenever the session changes; a file owned by another user,
  readable or writable by anyone else, not a regular file, unreadable or
  written for another host or coordinator is ignored with a warning naming
  the file and what to do (the agent then opens a new session);
* removed at a planned stop (SIGTERM: the agent leaves first) and when the
  server refuses the session timeout (the agent refuses to start);
* one agent per file: the agent holds a lock (``<file>.lock``, ``flock``) for
  its whole life; a second one with the same file refuses to start;
* the password never reaches a log line, argv or a metric: only the session's
  id is ever printed.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import fcntl
import json
import logging
import os
import stat

from instanceha.clock import SYSTEM, Clock
from instanceha.coordination import SessionCredentials

LOG = logging.getLogger(__name__)

VERSION = 1


class InUse(Exception):
    """Another process holds the session file's lock."""


@dataclasses.dataclass(frozen=True)
class Saved:
    """A session saved by an earlier process of this agent."""

    credentials: SessionCredentials
    pid: int
    written_at: float
    """Wall clock (epoch seconds) of the write."""
    incarnation: int | None = None
    """The membership's incarnation in that session, once joined."""


class SessionFile:
    """The session file of one agent (``host``) on one coordinator."""

    def __init__(self, path: str, host: str, where: str, root_path: str,
                 clock: Clock = SYSTEM) -> None:
        self.path = path
        self.host = host
        self.where = where
        self.root_path = root_path
        self.clock = clock
        self._lock_fd: int | None = None
        self._saved: tuple[int, int | None] | None = None
        self._save_failed: str | None = None

    # -- one agent per file ---------------------------------------------------------
    def lock(self) -> bool:
        """Take ``<file>.lock`` for the life of the process. False (with a warning)
        when the directory cannot hold it: the agent runs, but a restart opens a
        new session. Raises InUse when another process holds it."""
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            LOG.warning("session file %s: cannot create its lock %s (%s): a restarted agent "
                        "will open a new session and the controllers will see this host's "
                        "membership vanish; create the directory for the agent's user only "
                        "(systemd: RuntimeDirectory=instanceha) or set [agent] session_file",
                        self.path, lock_path, e.strerror)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise InUse(f"another instanceha-agent holds {lock_path}: two agents must "
                            "never share one session file (stop the other one, or give "
                            "each its own file)") from None
            raise
        self._lock_fd = fd
        return True

    @property
    def usable(self) -> bool:
        return self._lock_fd is not None

    # -- reading ------------------------------------------------------------------
    def load(self) -> Saved | None:
        """The session an earlier process saved, or None (none saved, or ignored:
        then a warning says why and what to do)."""
        if not self.usable:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # the first start, or the previous one stopped as planned
        except OSError as e:
            return self._ignored(f"cannot be opened ({e.strerror}; a symbolic link is "
                                 "never followed)")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return self._ignored("is not a regular file")
            if st.st_uid != os.geteuid():
                return self._ignored(f"is owned by uid {st.st_uid}, not by the agent's user "
                                     f"(uid {os.geteuid()})")
            if st.st_mode & 0o077:
                return self._ignored(f"has mode {stat.S_IMODE(st.st_mode):04o}: others may "
                                     "read or change it (the agent writes it 0600)")
            with os.fdopen(fd, "rb", closefd=False) as f:
                raw = f.read(4096)
        finally:
            os.close(fd)
        try:
            data = json.loads(raw.decode())
            creds = SessionCredentials(int(data["session_id"], 16),
                                       base64.b64decode(data["password"], validate=True))
            saved = Saved(creds, int(data["pid"]), float(data["written_at"]),
                          data.get("incarnation"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return self._ignored("is not a session file this agent wrote (unreadable)")
        mine = (data.get("host"), data.get("servers"), data.get("root_path"))
        if mine != (self.host, self.where, self.root_path):
            return self._ignored(f"was written for host {mine[0]!r} on {mine[1]}{mine[2]}, "
                                 f"not {self.host!r} on {self.where}{self.root_path}")
        return saved

    def _ignored(self, why: str) -> Saved | None:
        """Warn why the saved session is not used; the load's answer: None."""
        LOG.warning("session file %s %s: ignored, this agent opens a new session (the "
                    "controllers see its host's membership vanish once). Remove the file; "
                    "the agent writes its own", self.path, why)
        return None

    # -- writing ------------------------------------------------------------------
    def save(self, credentials: SessionCredentials, incarnation: int | None = None) -> None:
        """Keep ``credentials`` (no-op when already saved); never raises."""
        key = (credentials.session_id, incarnation)
        if not self.usable or key == self._saved:
            return
        data = {"version": VERSION, "host": self.host, "servers": self.where,
                "root_path": self.root_path, "session_id": f"0x{credentials.session_id:x}",
                "password": base64.b64encode(credentials.password).decode(),
                "pid": os.getpid(), "written_at": round(self.clock.wall(), 3),
                "incarnation": incarnation}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, json.dumps(data, sort_keys=True).encode())
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as e:
            _remove(tmp)
            if self._save_failed != e.strerror:
                self._save_failed = e.strerror
                LOG.warning("session file %s not written (%s): a restarted agent will open "
                            "a new session", self.path, e.strerror)
            return
        self._saved, self._save_failed = key, None
        LOG.debug("session 0x%x saved in %s", credentials.session_id, self.path)

    def remove(self) -> None:
        """A planned stop: the next start opens a new session."""
        if self.usable:
            _remove(self.path)
            self._saved = None

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        LOG.warning("%s not removed: %s", path, e.strerror)
