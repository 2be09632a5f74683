"""The second source of liveness: a TCP probe of a host's management address.

An agent's death is not its host's death. Before a host whose agent looks
dead may be FAILED, the detector asks this probe (``want(host)``): it opens
TCP connections to the host's management address (the hypervisor's
``host_ip`` in Nova) on ``port``, from a thread of its own, never in the
controller's tick:

* a connection accepted (SYN-ACK) or refused (RST) proves the host's kernel
  answers: ``ANSWERS``;
* no answer within ``timeout`` (``attempts`` connections, spread over it, so
  that one lost packet is not a verdict): ``SILENT``;
* until then: ``ASKING``; a host with no known address: ``NONE`` (the host is
  decided by its agent alone, as before, and a warning names it).

A host is asked again every ``interval`` while the detector wants it (an
``AGENT_DOWN`` host that stops answering is then FAILED); ``changed()`` names
the hosts whose answer changed, for the reconciler's incremental tick.
Bounded: at most ``max_in_flight`` connections at a time (a mass failure
queues the rest), each closed at once (``SO_LINGER`` 0: a reset, no
TIME_WAIT, nothing for the host's service to log but a reset).

Addresses are literal IPs only (no name lookup can block the probe).
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import ipaddress
import logging
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Mapping

from instanceha.clock import SYSTEM, Clock
from instanceha.engine.model import SecondSource

LOG = logging.getLogger(__name__)

_REFUSED = (errno.ECONNREFUSED, errno.ECONNRESET)
"""A reset from the host: its kernel answered."""


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    port: int = 22
    timeout: float = 0.5
    interval: float = 1.0
    attempts: int = 3
    max_in_flight: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("port must be in 1..65535")
        if self.timeout <= 0 or self.interval <= 0 or self.attempts < 1 \
                or self.max_in_flight < 1:
            raise ValueError("timeout, interval, attempts and max_in_flight must be positive")


@dataclasses.dataclass
class _Host:
    address: str
    answer: SecondSource = SecondSource.ASKING
    round_started: float | None = None
    attempts_made: int = 0
    answered: bool = False
    next_round: float = 0.0
    queued: bool = False
    sockets: list = dataclasses.field(default_factory=list)


class AddressProbe:
    """``want(host)`` / ``drop(host)`` / ``changed()``: the second source the
    reconciler asks. Thread-safe; never blocks its callers."""

    def __init__(self, addresses: Callable[[str], str | None], settings: ProbeSettings,
                 clock: Clock = SYSTEM) -> None:
        self.addresses = addresses
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._hosts: dict[str, _Host] = {}
        self._due: collections.deque[str] = collections.deque()
        self._changed: set[str] = set()
        self._warned: set[str] = set()
        self._orphans: list[socket.socket] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = threading.Event()
        self.counters: collections.Counter[str] = collections.Counter()
        self._thread = threading.Thread(target=self._run, name="host-probe", daemon=True)
        self._thread.start()

    # -- the reconciler's side -------------------------------------------------------
    def want(self, host: str) -> SecondSource:
        """The host's current answer; the first call starts asking it."""
        with self._lock:
            state = self._hosts.get(host)
            if state is not None:
                return state.answer
            address = _literal(self.addresses(host))
            if address is None:
                if host not in self._warned:
                    self._warned.add(host)
                    LOG.warning("host=%s has no management address known (Nova's hypervisor "
                                "host_ip): no second source, the host is judged by its "
                                "agent alone", host)
                return SecondSource.NONE
            self._warned.discard(host)
            self._hosts[host] = _Host(address)
            self._due.append(host)
            self._hosts[host].queued = True
        self._wake()
        return SecondSource.ASKING

    def answer(self, host: str) -> SecondSource:
        with self._lock:
            state = self._hosts.get(host)
            return state.answer if state is not None else SecondSource.NONE

    def drop(self, host: str) -> None:
        """No longer needed (the agent is back, the host is FAILED or gone)."""
        with self._lock:
            state = self._hosts.pop(host, None)
            if state is not None:
                self._orphans.extend(state.sockets)  # closed by the probe's thread
                state.sockets = []

    def changed(self) -> set[str]:
        """The hosts whose answer changed since the previous call."""
        with self._lock:
            out, self._changed = self._changed, set()
        return out

    def asked(self) -> Mapping[str, SecondSource]:
        with self._lock:
            return {h: s.answer for h, s in self._hosts.items()}

    def close(self) -> None:
        self._stop.set()
        self._wake()
        self._thread.join(2)
        for key in list(self._selector.get_map().values()):
            if isinstance(key.fileobj, socket.socket) and key.fileobj is not self._wake_r:
                key.fileobj.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # already woken (or closing)

    # -- the probe's thread ----------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                timeout = self._start_due(self.clock.monotonic())
                for key, _ in self._selector.select(timeout):
                    if key.fileobj is self._wake_r:
                        _drain(self._wake_r)
                    elif isinstance(key.fileobj, socket.socket):
                        self._attempt_done(key.fileobj, key.data)
                self._end_rounds(self.clock.monotonic())
            except Exception:  # the probe must outlive any error: fail towards "silent"
                LOG.exception("host probe failed; going on")
                self.clock.wait(0.05, self._stop)

    def _in_flight(self) -> int:
        return len(self._selector.get_map()) - 1

    def _start_due(self, now: float) -> float:
        """Start the rounds and attempts due; return how long the selector may wait."""
        s = self.settings
        spacing = s.timeout / s.attempts
        wait = s.interval
        with self._lock:
            for host, state in self._hosts.items():
                if state.round_started is None:
                    if state.queued:
                        continue
                    if now >= state.next_round:
                        state.queued = True
                        self._due.append(host)
                    else:
                        wait = min(wait, state.next_round - now)
                    continue
                if state.answered:
                    continue
                wait = min(wait, state.round_started + s.timeout - now)
                if state.attempts_made >= s.attempts:
                    continue
                due = state.round_started + state.attempts_made * spacing
                if now >= due and self._in_flight() < s.max_in_flight:
                    self._connect(host, state)
                    due += spacing
                if state.attempts_made < s.attempts:
                    wait = min(wait, due - now)
            while self._due and self._in_flight() < s.max_in_flight:
                host = self._due.popleft()
                queued = self._hosts.get(host)
                if queued is None:
                    continue
                queued.queued = False
                queued.round_started, queued.attempts_made, queued.answered = now, 0, False
                self._connect(host, queued)
                wait = min(wait, spacing)
        return max(0.0, wait)

    def _connect(self, host: str, state: _Host) -> None:
        state.attempts_made += 1
        family = socket.AF_INET6 if ":" in state.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.counters["connects"] += 1
        self.counters["max_in_flight"] = max(self.counters["max_in_flight"],
                                             self._in_flight() + 1)
        code = sock.connect_ex((state.address, self.settings.port))
        if code in (0, errno.EINPROGRESS, errno.EAGAIN):  # 0: reported writable at once
            self._selector.register(sock, selectors.EVENT_WRITE, (host, state.round_started))
            state.sockets.append(sock)
            return
        sock.close()
        if code in _REFUSED:
            self._answered(host, state)
        else:
            self.counters["errors"] += 1  # unreachable: counts as no answer

    def _attempt_done(self, sock: socket.socket, data) -> None:
        host, started = data
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self._close(sock)
        with self._lock:
            state = self._hosts.get(host)
            if state is not None and sock in state.sockets:
                state.sockets.remove(sock)
            if state is None or state.round_started != started or state.answered:
                return  # dropped, or an attempt of an earlier round
            if code == 0 or code in _REFUSED:
                self._answered(host, state)
            else:
                self.counters["errors"] += 1

    def _answered(self, host: str, state: _Host) -> None:
        state.answered = True
        self._verdict(host, state, SecondSource.ANSWERS)

    def _end_rounds(self, now: float) -> None:
        with self._lock:
            for host, state in self._hosts.items():
                if state.round_started is None:
                    continue
                if not state.answered and now < state.round_started + self.settings.timeout:
                    continue
                if not state.answered:
                    self._verdict(host, state, SecondSource.SILENT)
                for sock in state.sockets:  # the attempts still waiting: over
                    self._close(sock)
                state.sockets = []
                state.next_round = state.round_started + self.settings.interval
                state.round_started = None
            for sock in self._orphans:
                self._close(sock)
            self._orphans = []

    def _close(self, sock: socket.socket) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _verdict(self, host: str, state: _Host, answer: SecondSource) -> None:
        self.counters["answers" if answer is SecondSource.ANSWERS else "silent"] += 1
        if answer is not state.answer:
            if state.answer is not SecondSource.ASKING or answer is SecondSource.SILENT:
                LOG.info("host=%s second source: %s (%s port %d)", host,
                         "answers" if answer is SecondSource.ANSWERS else "SILENT",
                         state.address, self.settings.port)
            state.answer = answer
            self._changed.add(host)


def _literal(address: str | None) -> str | None:
    if not address:
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, OSError):
        pass


class HostAddresses:
    """host -> its management address, read from Nova (the hypervisors'
    ``host_ip``) in the background: every ``refresh`` seconds, and at most every
    ``retry`` seconds when a host is asked for whose address is not known."""

    def __init__(self, read: Callable[[], Mapping[str, str]], refresh: float = 300.0,
                 retry: float = 10.0, clock: Clock = SYSTEM) -> None:
        self.read = read
        self.refresh = refresh
        self.retry = retry
        self.clock = clock
        self._map: Mapping[str, str] = {}
        self._read_at: float | None = None
        self._lock = threading.Lock()
        self._reading = False
        self.error: str | None = None

    def __call__(self, host: str) -> str | None:
        now = self.clock.monotonic()
        with self._lock:
            address = self._map.get(host)
            stale = self._read_at is None or now - self._read_at >= \
                (self.refresh if address is not None else self.retry)
            start = stale and not self._reading
            if start:
                self._reading = True
        if start:
            threading.Thread(target=self._read_now, name="host-addresses", daemon=True).start()
        return address

    def _read_now(self) -> None:
        started = self.clock.monotonic()
        try:
            fresh = dict(self.read())
            error = None
        except Exception as e:  # Nova away: keep what is known, try again later
            fresh, error = None, f"{type(e).__name__}: {e}"
            LOG.warning("management addresses not read from Nova: %s", error)
        with self._lock:
            if fresh is not None:
                self._map = fresh
            self._read_at = started
            self.error = error
            self._reading = False

    def warm(self) -> HostAddresses:
        """Read once now (at start), in the caller's thread."""
        self._read_now()
        return self
