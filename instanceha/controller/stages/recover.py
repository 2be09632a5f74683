"""Stage RECOVER: evacuate or notify each instance of the fenced host by its
policy, then mark the host RECOVERED.

Entered right after the fence (same job, with the plan read while the fence
ran) or by a later tick (a new leader resuming from the FENCED or RECOVERING
marker, which reads the plan itself). The first evacuate is sent at once;
what the second read of the host finds (a server that landed there while it
was fenced) is recovered after the first batch. Each evacuation is reported
(bus, journal, metric) as it completes, not after the batch: a leader dying
mid-batch has told consumers and the journal of the servers it moved.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import logging

from instanceha import exceptions
from instanceha.compute import calls
from instanceha.compute import exceptions as exc
from instanceha.compute.evacuation import Outcome
from instanceha.controller.journal import IncidentState
from instanceha.engine import marker as mk
from instanceha.notify import events

from .context import StageContext
from .plan import Plan, read_plan, with_moved

LOG = logging.getLogger(__name__)

MOVED_MARGIN = 60.0
"""Seconds before the incident's start from which an evacuation record counts
as this incident's (clocks of the controller and of Nova's database differ)."""


def run(ctx: StageContext, host: str, svc, verify, plan: Plan | None = None,
        prepared=None) -> None:
    """``plan``: read before the force-down (then the host is listed again, to
    catch late arrivals); None: read it now. ``prepared``: the spare chosen ahead."""
    started = ctx.clock.monotonic()
    m = svc.marker
    token = m.token if m and m.token is not None else verify()
    incident = ctx.report.incident(host, token)
    if m is not None and m.waiting and ctx.dispatcher is not None \
            and not ctx.dispatcher.worth_retrying(host):
        raise exc.WaitingForRoom(count=m.waiting, host=host,
                                 reason="the capacity model was not read again since")
    nova = ctx.guarded(verify)
    early = plan is not None
    marking = None
    with concurrent.futures.ThreadPoolExecutor(2, f"recover-{host}") as side:
        if m is not None and m.state is mk.MarkerState.FENCED:
            recovering = ctx.marker(mk.MarkerState.RECOVERING, token)
            if ctx.settings.target.reserved:
                nova.disable(host, recovering)  # before the spare is recorded in it
            else:  # beside the first evacuations, not before them
                marking = calls.submit(side, nova.disable, host, recovering)
        if plan is None:
            plan = read_plan(ctx.nova, host, ctx.settings.default_recovery)
            if m is not None and ctx.report.tells:
                # resumed: consumers told of a start an earlier leader did not end
                plan = _with_moved(ctx, host, plan, m, incident)
        relisted = calls.submit(side, read_plan, ctx.nova, host,
                                ctx.settings.default_recovery) if early else None
        outcome = _Outcome()
        spares = _recover(ctx, host, plan, nova, m, token, incident, outcome, prepared)
        spares = spares or (m.spares if m is not None else ())
        if relisted is not None:
            late = plan.new_in(relisted.result())
            if late.servers:
                LOG.warning("host=%s %d more server(s) found after the force-down",
                            host, len(late.servers))
                ctx.report.record(host, "relisted", f"{len(late.servers)} more server(s) "
                                  "found on the host after the force-down")
                fresh = mk.Marker(mk.MarkerState.RECOVERING, token=token, spares=spares) \
                    if spares else m
                spares = _recover(ctx, host, late, nova, fresh, token, incident, outcome,
                                  None, batch=2) or spares
        if marking is not None:
            marking.result()  # raises a failed write: RECOVERED is never written first
    if outcome.held:
        _wait_for_room(ctx, host, nova, token, spares, outcome)
    note = f"{outcome.evacuated} evacuated, {outcome.failed} failed, {outcome.notified} notified"
    # said before the marker is written: a leader killed in between leaves the
    # marker RECOVERING, and the next one's recovery finds it sent (the journal)
    ctx.report.emit("recovery_end", host=host, incident_id=incident,
                    evacuated=outcome.evacuated, failed=outcome.failed,
                    notified=outcome.notified, duration=ctx.clock.monotonic() - started)
    nova.disable(host, ctx.marker(mk.MarkerState.RECOVERED, token, note, spares))
    api_calls = ctx.calls.count(host)
    LOG.warning("host=%s recovered: %s (%d API requests since the fence)", host, note,
                api_calls)
    ctx.report.record(host, "recovery_end", f"recovered: {note}; {api_calls} API requests "
                      "since the fence", state=IncidentState.RECOVERED,
                      seconds=round(ctx.clock.monotonic() - started, 2), api_calls=api_calls)
    if ctx.settings.power_on_after_recovery:
        power_on(ctx, host, verify)


class _Outcome:
    def __init__(self) -> None:
        self.evacuated = self.failed = self.notified = 0
        self.held: dict[str, str] = {}
        """server id -> why it waits for room (not sent, or Nova found none)."""


def _wait_for_room(ctx: StageContext, host, nova, token, spares, outcome: _Outcome) -> None:
    """Servers wait for room: the host stays RECOVERING (with how many wait),
    and the actuator tries again with its back-off."""
    n = len(outcome.held)
    note = f"{outcome.evacuated} evacuated, {n} waiting for room"
    nova.disable(host, ctx.marker(mk.MarkerState.RECOVERING, token, note, spares, waiting=n))
    ctx.dispatcher.waiting(host)
    LOG.warning("host=%s %d server(s) wait for room; tried again when the capacity model "
                "shows some", host, n)
    ctx.report.record(host, "waiting", f"{n} server(s) wait for room; sent when room "
                      "appears", state=IncidentState.RECOVERING, waiting=n)
    reason = next(iter(outcome.held.values()))
    raise exc.WaitingForRoom(count=n, host=host, reason=reason)


def _recover(ctx: StageContext, host, plan: Plan, nova, marker, token, incident,
             outcome: _Outcome, prepared, batch: int = 1) -> tuple[str, ...]:
    """One batch: report the plan, notify, evacuate; returns the spares used."""
    evacuate, notify = plan.evacuate, plan.notify
    resuming = marker is not None and marker.state is mk.MarkerState.RECOVERING \
        and marker.waiting > 0
    if resuming:  # the rest was reported when the recovery began
        LOG.warning("host=%s trying again %d server(s) that waited for room", host,
                    len(evacuate))
    else:
        LOG.warning("host=%s recovering %s", host, plan.summary())
        ctx.report.emit("recovery_start", host=host, incident_id=incident,
                        evacuate=len(evacuate), notify=len(notify), batch=batch)
        ctx.report.record(host, "recovery_start", plan.summary(), state=IncidentState.RECOVERING)
        _not_evacuated(ctx, host, plan, incident, outcome)
    dispatch = None
    if ctx.dispatcher is not None and evacuate:
        dispatch = ctx.dispatcher.plan(host, evacuate, plan.facts)
        evacuate = list(dispatch.send)
        for s, reason in dispatch.held:
            _held(ctx, host, incident, s, reason, dispatch, outcome)
    for s in evacuate:
        ctx.report.emit("evacuate_start", host=host, incident_id=incident, instance_id=s.id,
                        project_id=s.project_id or "unknown", policy="evacuate")
    if not evacuate:
        return ()
    by_id = {s.id: s for s in evacuate}
    reported: set[str] = set()
    evacuator = ctx.evacuator_factory(nova)
    previous = getattr(evacuator, "on_result", None)

    def evacuated(r) -> None:  # as each one completes (the evacuator's worker threads):
        if previous is not None:  # failures may still find room on the next spare:
            previous(r)  # those are reported at the end
        if r.ok and r.server_id not in reported:
            reported.add(r.server_id)
            _evacuated(ctx, host, incident, r, by_id[r.server_id], plan.decisions[r.server_id])

    evacuator.on_result = evacuated
    extra = {}
    if dispatch is not None:
        evacuator.gate = ctx.dispatcher.gate(dispatch)
        extra = dict(targets=dispatch.targets, allowed=ctx.dispatcher.allowed(ctx.nova))
    results, spares = ctx.placement.evacuate(
        host, evacuate, evacuator, nova, marker,
        lambda used: nova.disable(host, ctx.marker(mk.MarkerState.RECOVERING, token,
                                                   spares=used)),
        lambda kind, text, **kw: ctx.report.record(host, kind, text, **kw),
        prepared=prepared, **extra)
    if dispatch is not None:
        results = _refused(ctx, host, nova, incident, results, by_id, evacuator, dispatch,
                           outcome)
        for text in ctx.dispatcher.group_violations(results):
            LOG.error("host=%s server group policy NOT kept: %s", host, text)
            ctx.report.record(host, "group", f"server group policy not kept: {text}")
    for r in results:
        server = by_id[r.server_id]
        if r.ok:
            outcome.evacuated += 1
            if r.server_id not in reported:  # an evacuator without the hook
                reported.add(r.server_id)
                _evacuated(ctx, host, incident, r, server, plan.decisions[r.server_id])
            continue
        outcome.failed += 1
        ctx.report.count("evacuation", r.outcome.value, r.seconds)
        LOG.error("host=%s server=%s NOT recovered (%s): %s", host, r.server_id,
                  r.outcome.value, r.error)
        ctx.report.emit("evacuate_error", host=host, incident_id=incident,
                        instance_id=r.server_id, project_id=server.project_id or "unknown",
                        policy="evacuate", error=str(r.error), retrying=False)
        ctx.report.record(host, "instance", f"{server.name}: NOT recovered "
                          f"({r.outcome.value}): {r.error}", counts={"failed": 1},
                          instance_id=r.server_id, outcome=r.outcome.value, status=r.status,
                          attempts=r.attempts, seconds=round(r.seconds, 2))
    return spares


def _with_moved(ctx: StageContext, host, plan: Plan, m: mk.Marker, incident) -> Plan:
    """Moved since the incident began (by the journal, else the marker's time):
    the evacuations of an earlier leader that died before reporting their end."""
    opened = ctx.report.opened_at(incident)
    began = datetime.datetime.fromtimestamp(opened, datetime.timezone.utc) \
        if opened is not None else m.at
    if began is None:
        return plan
    since = began - datetime.timedelta(seconds=MOVED_MARGIN)
    fuller = with_moved(plan, ctx.nova, since, ctx.settings.default_recovery,
                        lambda sid: ctx.report.told(events.EVACUATE_END, incident, sid))
    if len(fuller.servers) > len(plan.servers):
        LOG.warning("host=%s %d server(s) moved by an earlier evacuation whose end was not "
                    "reported: verified, then reported", host,
                    len(fuller.servers) - len(plan.servers))
    return fuller


def _not_evacuated(ctx: StageContext, host, plan: Plan, incident, outcome: _Outcome) -> None:
    to_evacuate, to_notify = {s.id for s in plan.evacuate}, {s.id for s in plan.notify}
    for s in plan.servers:
        decision = plan.decisions[s.id]
        if s.id in to_evacuate:
            continue
        what = "notified" if s.id in to_notify else "ignored"
        ctx.report.record(host, "instance", f"{s.name}: {what} ({decision.reason})",
                          counts={what: 1}, instance_id=s.id, outcome=what, status=s.status)
    for s in plan.notify:
        ctx.report.emit("recovery_required", host=host, incident_id=incident, instance_id=s.id,
                        project_id=s.project_id or "unknown", policy="notify")
    outcome.notified += len(plan.notify)


def _held(ctx: StageContext, host, incident, server, reason, dispatch, outcome) -> None:
    """A server kept on the fenced host for lack of room: said once per
    incident (journal, bus), and counted as waiting."""
    outcome.held[server.id] = reason
    if not ctx.dispatcher.first_hold(incident, server.id, reason):
        return
    LOG.warning("host=%s server=%s waits for room: %s", host, server.id, reason)
    ctx.report.record(host, "instance", f"{server.name}: waiting for room ({reason})",
                      instance_id=server.id, outcome="waiting", status=server.status,
                      priority=dispatch.priority.get(server.id))
    ctx.report.emit("evacuate_deferred", host=host, incident_id=incident,
                    instance_id=server.id, project_id=server.project_id or "unknown",
                    reason=reason, priority=dispatch.priority.get(server.id, 0))


def _refused(ctx: StageContext, host, nova, incident, results, by_id, evacuator, dispatch,
             outcome: _Outcome):
    """Nova found no room for some ("No valid host", which leaves them in
    ERROR): those sent to a planned target go once more without one; the
    others are reset to active and wait for room like the ones held back."""
    retry = [by_id[r.server_id] for r in results
             if r.outcome is Outcome.NO_CAPACITY and dispatch.targets.get(r.server_id)]
    if retry:
        LOG.warning("host=%s Nova refused the planned target of %d server(s): sent again "
                    "without a target", host, len(retry))
        again = {r.server_id: r for r in evacuator.evacuate_host(host, retry)}
        results = [again.get(r.server_id, r) for r in results]
    kept = []
    for r in results:
        if r.outcome is not Outcome.NO_CAPACITY:
            kept.append(r)
            continue
        server = by_id[r.server_id]
        try:
            nova.reset_state(server.id, "active")  # not left in ERROR
        except exceptions.InstanceHAError as e:
            LOG.warning("host=%s server=%s not reset to active after Nova's 'No valid "
                        "host': %s", host, server.id, e)
        _held(ctx, host, incident, server, f"Nova found no valid host: {r.error}", dispatch,
              outcome)
    return kept


def _evacuated(ctx: StageContext, host, incident, r, server, decision) -> None:
    ctx.report.count("evacuation", r.outcome.value, r.seconds)
    LOG.warning("host=%s server=%s evacuated to %s (%s) in %.1f s", host, r.server_id,
                r.dest_host, r.status, r.seconds)
    ctx.report.emit("evacuate_end", host=host, incident_id=incident, instance_id=r.server_id,
                    project_id=server.project_id or "unknown", policy="evacuate",
                    target_host=r.dest_host, duration=r.seconds)
    ctx.report.record(host, "instance", f"{server.name}: evacuated to {r.dest_host} "
                      f"({r.status}) in {r.seconds:.1f} s ({decision.reason})",
                      counts={"evacuated": 1}, instance_id=r.server_id,
                      outcome=r.outcome.value, target_host=r.dest_host, status=r.status,
                      attempts=r.attempts, seconds=round(r.seconds, 2))


def power_on(ctx: StageContext, host: str, verify) -> None:
    """Optional: power the repaired-or-not host on again once nothing of it can
    run twice (its instances are recovered); it rejoins and is re-enabled
    only when its agent and nova-compute are back and clean."""
    verify()
    try:
        evidence = ctx.fencer.power_on(host)
    except exceptions.InstanceHAError as e:
        LOG.error("host=%s power on after recovery failed: %s (%s); the host stays off",
                  host, e, e.action.value)
        ctx.report.record(host, "power_on", f"power on after recovery failed: {e}",
                          action=e.action.value)
        return
    ctx.report.record(host, "power_on", f"powered on after recovery: read back "
                      f"{evidence.read_back.value}")
    LOG.warning("host=%s powered on after recovery: read back %s", host,
                evidence.read_back.value)
