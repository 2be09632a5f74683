"""The ``fence_agent`` driver: any installed ClusterLabs fence agent.

``fence_ipmilan``, ``fence_redfish``, ``fence_idrac``, ``fence_ilo*``,
``fence_apc_snmp``, ``fence_virsh``, ...: the agent named by the inventory's
``agent`` key is run once per primitive, with no argument, its options on
stdin (``agent_protocol``): ``action=off``/``on`` for ``request_power``,
``action=status`` for ``get_power_state``, ``action=monitor`` then
``status`` for ``check``. The confirm loop decides, as for every driver; the
agent's own wait for the power change (``power_timeout``) is set to half the
call's timeout, so that it gives up before the driver kills it.

Each run is bounded by the call's timeout: past it the agent's whole process
group (the agent and its ipmitool/snmpget/ssh children) is killed with
SIGKILL and the call raises ``AgentTimeout``. The agent gets a minimal
environment (``PATH``, ``LANG=C``) plus what its secrets need; nothing of the
controller's own environment.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable

from instanceha.fencing import agent_protocol as proto
from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import FenceDriver, PowerState
from instanceha.fencing.model import BMCEntry, Secret

SHIMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shims")
AGENT_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
DEFAULT_TIMEOUT = 20.0  # seconds per agent run when the inventory gives no 'timeout'


class Timeout(Exception):
    """The agent ran past its timeout (and was killed)."""


_RUNNING: set[int] = set()  # process groups of the agents running now
_RUNNING_LOCK = threading.Lock()


@atexit.register
def _kill_running() -> None:
    """A controller that exits mid-fence leaves no agent behind (they run in
    their own session, so they would outlive it)."""
    with _RUNNING_LOCK:
        groups = list(_RUNNING)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_process(argv: list[str], stdin: str, env: dict, timeout: float) -> proto.Answer:
    """Run ``argv`` in its own process group; SIGKILL the group past ``timeout``."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, text=True, errors="replace",
                         start_new_session=True, close_fds=True)
    with _RUNNING_LOCK:
        _RUNNING.add(p.pid)
    try:
        out, err = p.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p)
        raise Timeout()
    finally:
        if p.poll() is None:  # an exception of ours: never leave the agent running
            _kill_group(p)
        with _RUNNING_LOCK:
            _RUNNING.discard(p.pid)
    return proto.Answer(p.returncode, out, err)


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        p.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a child that left the group holds the pipes
        p.kill()
        p.wait()


def find_agent(name: str) -> str | None:
    for d in AGENT_DIRS:
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


Runner = Callable[[list[str], str, dict, float], proto.Answer]


class FenceAgentDriver(FenceDriver):
    name = "fence_agent"

    def __init__(self, entry: BMCEntry, runner: Runner | None = None,
                 find: Callable[[str], str | None] = find_agent) -> None:
        super().__init__(entry)
        self._runner = runner or run_process
        self._find = find

    @property
    def agent(self) -> str:
        return self.entry.agent or ""  # the inventory requires it for fence_agent

    @property
    def call_timeout(self) -> float:
        return self.entry.timeout or DEFAULT_TIMEOUT

    def facts(self, **extra: object) -> dict:
        # the agent is what an operator knows the device by
        where = self.address + (f" plug {self.entry.plug}" if self.entry.plug else "")
        return {"host": self.host, "driver": self.agent, "address": where, **extra}

    # -- one run -----------------------------------------------------------

    def _agent_path(self) -> str:
        path = self._find(self.agent)
        if path is None:
            raise exc.InventoryError(
                file=self.entry.source, host=self.host, key=_key(self.entry, "agent"),
                reason=f"fence agent {self.agent} is not installed (not in "
                       f"{', '.join(AGENT_DIRS)} nor $PATH): install it (Debian/Ubuntu: "
                       "the fence-agents package) or fix the name")
        return path

    def run(self, action: str, timeout: float | None = None) -> tuple[proto.Answer, list[str]]:
        """Run the agent once; the answer and the secrets to redact from it."""
        timeout = timeout or self.call_timeout
        plan = proto.secret_plan(self.entry, SHIMS)
        opts = dict(plan.stdin)
        if action in ("on", "off") and "power_timeout" not in opts:
            opts["power_timeout"] = str(max(1, int(timeout / 2)))
        secrets = proto.secrets_of(opts, plan.env, plan.snmp_conf)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":" + ":".join(AGENT_DIRS),
               "LANG": "C", "LC_ALL": "C",
               **{k: v.reveal() if isinstance(v, Secret) else v for k, v in plan.env.items()}}
        argv = [self._agent_path()]
        with tempfile.TemporaryDirectory(prefix="instanceha-agent-") as tmp:
            if plan.snmp_conf:
                _write_snmp_conf(tmp, plan.snmp_conf)
                env["SNMPCONFPATH"] = tmp
            env["HOME"] = tmp  # nothing of the controller's dot-files
            try:
                answer = self._runner(argv, proto.request_lines(action, opts), env, timeout)
            except Timeout:
                raise exc.AgentTimeout(**self.facts(), what=action, timeout=timeout)
            except OSError as e:
                raise exc.AgentFailed(**self.facts(), what=action, rc="none",
                                      reason=f"could not start {argv[0]} ({e.strerror})")
        ignored = proto.unknown_options(answer)
        if ignored:
            raise exc.InventoryError(
                file=self.entry.source, host=self.host,
                key=_key(self.entry, f"options.{ignored[0]}"),
                reason=f"{self.agent} does not know the option {ignored[0]!r} (it said "
                       "'Ignoring unknown option'); see the agent's man page")
        return answer, secrets

    # -- the two primitives (and the check) --------------------------------

    def request_power(self, state: PowerState, timeout: float | None = None) -> None:
        answer, secrets = self.run(state.value, timeout)
        if answer.rc != 0:
            raise proto.failure(state.value, answer, self.facts(), secrets,
                                self.entry.username)

    def get_power_state(self, timeout: float | None = None) -> PowerState:
        answer, secrets = self.run("status", timeout)
        return proto.read_status(answer, self.facts(), secrets, self.entry.username)

    def monitor(self, timeout: float | None = None) -> PowerState:
        """``action=monitor`` (the device answers and accepts the login), then the
        power state: what ``instanceha fencing check`` reports."""
        answer, secrets = self.run("monitor", timeout)
        if answer.rc != 0:
            raise proto.failure("monitor", answer, self.facts(), secrets,
                                self.entry.username)
        return self.get_power_state(timeout)


def _key(entry: BMCEntry, key: str) -> str:
    """The inventory key as written: ``levels[N].devices[M].`` for a levelled host."""
    return entry.key_prefix + key


def _write_snmp_conf(directory: str, directives: dict) -> None:
    path = os.path.join(directory, "snmp.conf")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        for name, value in directives.items():
            f.write(f"{name} {value.reveal()}\n")
