"""The read-only half of a recovery, prepared while the fence runs.

A plan is what Nova says of the failed host's servers (one detailed list for
the host, with each flavor's extra specs), the policy inputs of each (image
properties and the host's aggregates, cached and shared across hosts) and the
engine's decision for each: evacuate, notify or ignore. Reading it changes
nothing, so the fence stage starts it at once and the recover stage finds it
ready when the power-off is read back: the first evacuate leaves right after
the force-down.

``new_in()`` keeps what a second list, read after the force-down, adds (a
server that landed on the host while it was being fenced): nothing on the
host is left out because the first list was read early.

``with_moved()`` adds, to the plan of a recovery resumed by a new leader, the
servers an earlier leader's evacuations moved off the host and whose end it
never reported (it died first): the evacuator verifies their move (it never
sends one again), so a consumer told of an evacuation's start is told of its end.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping

from instanceha.compute import exceptions as exc
from instanceha.compute.model import Server
from instanceha.engine.instance_policy import (
    InstanceFacts,
    Recovery,
    RecoveryDecision,
    decided_by_server_or_flavor,
)
from instanceha.engine.instance_policy import decide as decide_instance


@dataclasses.dataclass(frozen=True)
class Plan:
    host: str
    servers: tuple[Server, ...]
    decisions: Mapping[str, RecoveryDecision]
    facts: Mapping[str, InstanceFacts] = dataclasses.field(default_factory=dict)
    """What each decision was made from (the restart priority reads it too)."""

    def _with(self, recovery: Recovery) -> list[Server]:
        return [s for s in self.servers if self.decisions[s.id].recovery is recovery]

    @property
    def evacuate(self) -> list[Server]:
        return self._with(Recovery.EVACUATE)

    @property
    def notify(self) -> list[Server]:
        return self._with(Recovery.NOTIFY)

    @property
    def ignored(self) -> list[Server]:
        return self._with(Recovery.IGNORE)

    def summary(self) -> str:
        return (f"{len(self.servers)} server(s): {len(self.evacuate)} to evacuate, "
                f"{len(self.notify)} to notify, {len(self.ignored)} ignored")

    def new_in(self, later: Plan) -> Plan:
        """The part of a ``later`` read of the host that this plan does not hold."""
        known = {s.id for s in self.servers}
        fresh = tuple(s for s in later.servers if s.id not in known)
        return Plan(self.host, fresh, {s.id: later.decisions[s.id] for s in fresh},
                    {s.id: later.facts[s.id] for s in fresh if s.id in later.facts})


def read_plan(nova, host: str, default: Recovery) -> Plan:
    """Read the host's servers and their policy facts; decide each (no write)."""
    return _decided(nova, host, tuple(nova.servers_on_host(host)), default)


def _decided(nova, host: str, servers: tuple[Server, ...], default: Recovery) -> Plan:
    """The plan of ``servers`` of ``host``: their policy facts, read, and the
    engine's decision for each."""
    facts = nova.instance_facts(servers, host, enough=decided_by_server_or_flavor) \
        if servers else {}
    return Plan(host, servers, {s.id: decide_instance(facts[s.id], default) for s in servers},
                facts)


def with_moved(plan: Plan, nova, since: datetime.datetime, default: Recovery,
               reported: Callable[[str], bool]) -> Plan:
    """``plan`` plus the servers whose evacuation from its host (a record
    updated since ``since``: the incident's start) moved them away and whose
    end is not ``reported`` (by server id), as the policy decides them to be
    evacuated. A server deleted since is left out: nothing of it to verify."""
    known = {s.id for s in plan.servers}
    ids: list[str] = []
    for m in nova.evacuations(source_host=plan.host, changes_since=since):
        stamp = m.updated_at or m.created_at
        sid = m.instance_uuid
        if m.source_compute != plan.host or sid in known or sid in ids \
                or (stamp is not None and stamp < since) or reported(sid):
            continue
        ids.append(sid)
    moved = []
    for sid in ids:
        try:
            moved.append(nova.server(sid))
        except exc.NovaNotFound:
            continue
    if not moved:
        return plan
    more = _decided(nova, plan.host, tuple(moved), default)
    kept = tuple(more.evacuate)
    return Plan(plan.host, plan.servers + kept,
                {**plan.decisions, **{s.id: more.decisions[s.id] for s in kept}},
                {**plan.facts, **{s.id: more.facts[s.id] for s in kept}})
