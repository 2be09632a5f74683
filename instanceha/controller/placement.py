"""Where the recovery actuator evacuates to: the scheduler, or reserved spares.

With ``[recovery] method = scheduler`` the servers are handed to the
Evacuator without a target. With ``reserved_hosts`` (see
``engine/reserved.py`` for the rules) a spare is chosen from a fresh read of
Nova, recorded in the failed host's marker (``spares=``, so a new leader
resumes with the same spare), enabled (leadership verified right before,
through the guarded client), and the servers are evacuated to it. Servers
without room there (NoValidHost) go to the next spare, then to the scheduler
or are reported as failed to recover.

Spare choices are serialized across the actuator's recovery jobs (two hosts
failing at once never get the same spare): enabling a spare removes its
reserved marker, and the next choice reads Nova after that.

``prepare()`` makes the choice ahead, while the failed host is being fenced
(a read; nothing changes): the spare is held in memory for that host, so no
other recovery picks it, and ``evacuate()`` records and enables it after the
fence without reading Nova again. ``release()`` drops a hold that was not
used (the fence failed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence

from instanceha.compute import exceptions as exc
from instanceha.compute.evacuation import EvacuationResult, Outcome
from instanceha.engine.model import Phase
from instanceha.engine.reserved import Choice, HostInfo, TargetPolicy, choose_spare, resume_spare

LOG = logging.getLogger(__name__)


class Placement:
    def __init__(self, policy: TargetPolicy, nova,
                 phases: Callable[[], Mapping[str, Phase]] = dict,
                 lock: threading.Lock | None = None) -> None:
        """``lock`` serialises the read of Nova, the choice and the enable of a
        spare (a lock of its own by default; anything else that enables spares
        must hold the same one)."""
        self.policy = policy
        self.nova = nova  # reads only; changes go through the caller's guarded client
        self.phases = phases
        self._lock = lock if lock is not None else threading.Lock()
        self._held: dict[str, str] = {}
        """failed host -> the spare chosen for it ahead, not recorded yet"""

    def _held_for_others(self, host: str) -> set[str]:
        return {spare for failed, spare in self._held.items() if failed != host}

    def prepare(self, host: str, marker) -> Choice | None:
        """Choose ``host``'s spare ahead of its fence and hold it for ``host``
        (None with ``method = scheduler``). Reads Nova; writes nothing."""
        if not self.policy.reserved:
            return None
        with self._lock:
            hosts = self._hosts()
            choice = resume_spare(marker, hosts.values())
            if choice is None:
                used = set(marker.spares) if marker is not None else set()
                choice = choose_spare(hosts.get(host) or HostInfo(host), hosts.values(),
                                      self.policy.match,
                                      taken=used | self._held_for_others(host))
            if choice.host is not None:
                self._held[host] = choice.host
            return choice

    def release(self, host: str) -> None:
        with self._lock:
            self._held.pop(host, None)

    def _hosts(self) -> dict[str, HostInfo]:
        services = self.nova.services()
        aggregates = self.nova.host_aggregates()
        phases = self.phases()
        return {s.host: HostInfo(host=s.host, zone=s.zone,
                                 aggregates=aggregates.get(s.host, frozenset()),
                                 disabled=s.disabled, marker=s.marker, nova_up=s.up,
                                 forced_down=s.forced_down, phase=phases.get(s.host))
                for s in services}

    def evacuate(self, host: str, servers: Sequence, evacuator, guarded, marker,
                 record_spares: Callable[[tuple[str, ...]], object],
                 journal: Callable[..., object] | None = None,
                 prepared: Choice | None = None,
                 targets: Mapping[str, str | None] | None = None,
                 allowed: Callable[[object, str], bool] | None = None,
                 ) -> tuple[list[EvacuationResult], tuple[str, ...]]:
        """Evacuate ``servers`` of the fenced ``host`` (started in the order
        given); one result per server, in order, and the spares used (oldest
        first).

        ``marker``: the failed host's marker as read (its ``spares`` resume an
        interrupted recovery); ``record_spares(spares)`` writes them into it;
        ``prepared``: the choice ``prepare()`` made ahead. ``targets``: each
        server's planned target with the scheduler method; ``allowed(server,
        spare)``: whether its server group lets it go to that spare (a server
        not allowed goes on to the next spare, or the scheduler)."""
        try:
            return self._evacuate(host, servers, evacuator, guarded, marker, record_spares,
                                  journal, prepared, targets, allowed)
        finally:
            self.release(host)

    def _evacuate(self, host, servers, evacuator, guarded, marker, record_spares, journal,
                  prepared, targets=None, allowed=None):
        if not self.policy.reserved or not servers:
            if targets:
                return evacuator.evacuate_host(host, servers, targets=targets), ()
            return evacuator.evacuate_host(host, servers), ()
        say = journal or (lambda *a, **k: None)
        final: dict[str, EvacuationResult] = {}
        used = list(marker.spares) if marker is not None else []
        remaining = list(servers)
        current: Choice | None = None
        if prepared is not None and prepared.host is not None:
            current = prepared
        elif used:
            with self._lock:
                current = resume_spare(marker, self._hosts().values())
        if current is not None and used and current.host == used[-1]:
            LOG.warning("host=%s spare=%s resumed: %s", host, current.host, current.reason)
        none_left = ""
        while remaining:
            with self._lock:
                if current is None:
                    hosts = self._hosts()
                    failed = hosts.get(host) or HostInfo(host)
                    current = choose_spare(failed, hosts.values(), self.policy.match,
                                           taken=set(used) | self._held_for_others(host))
                    if current.host is None:
                        none_left = current.reason
                        break
                if not used or used[-1] != current.host:
                    used.append(current.host)
                    record_spares(tuple(used))  # durable before the spare changes
                    LOG.warning("host=%s spare=%s chosen for %d server(s): %s", host,
                                current.host, len(remaining), current.reason)
                    say("spare", f"spare {current.host} chosen for {len(remaining)} "
                        f"server(s): {current.reason}", spare=current.host)
                if current.enable:
                    guarded.enable(current.host, unset_forced_down=False)
                    LOG.warning("host=%s spare=%s enabled: reserved spare now in service",
                                host, current.host)
                    say("spare", f"spare {current.host} enabled", spare=current.host)
            spare = current.host
            take = [s for s in remaining if allowed is None or allowed(s, spare)]
            skipped = [s for s in remaining if s not in take]
            results = evacuator.evacuate_host(host, take, target_host=spare) if take else []
            for r in results:
                final[r.server_id] = r
            remaining = skipped + [s for s in take
                                   if final[s.id].outcome is Outcome.NO_CAPACITY]
            if remaining:
                LOG.warning("host=%s spare=%s has no room (or its server group forbids "
                            "it) for %d server(s): trying the next spare", host, spare,
                            len(remaining))
            current = None
        if remaining and self.policy.fallback_to_scheduler:
            LOG.warning("host=%s no spare for %d server(s) (%s): the scheduler places them",
                        host, len(remaining), none_left)
            say("spare", f"no spare for {len(remaining)} server(s) ({none_left}): "
                "the scheduler places them")
            for r in evacuator.evacuate_host(host, remaining):
                final[r.server_id] = r
        elif remaining:
            LOG.error("host=%s no spare for %d server(s) (%s) and no fallback to the "
                      "scheduler: reported as failed to recover", host, len(remaining),
                      none_left)
            say("spare", f"no spare for {len(remaining)} server(s) ({none_left}); "
                "fallback to the scheduler is off")
            for s in remaining:
                if s.id not in final:  # never tried: no target to try
                    error = exc.NoCapacity(server=s.id, host=host, attempts=0,
                                           reason=f"no reserved spare host: {none_left}")
                    final[s.id] = EvacuationResult(s.id, s.name, host, Outcome.NO_CAPACITY,
                                                   attempts=0, seconds=0.0, error=error)
        return [final[s.id] for s in servers], tuple(used)
