"""Stage FENCE: power the failed host off, read the power-off back, force its
nova-compute down and mark it FENCED in Nova.

Order, never changed: fence read back (or an operator's audited attestation
when the BMC cannot confirm) -> force-down with the FENCED marker. Leadership
is verified before the power-off and before the force-down. Returns the
service as the force-down left it, so the recovery can go on at once.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging

from instanceha import exceptions
from instanceha.controller.journal import IncidentState
from instanceha.engine import marker as mk

from .context import StageContext
from .report import FENCE_ATTEMPTS

LOG = logging.getLogger(__name__)


def run(ctx: StageContext, host: str, view, svc, verify):
    token = verify()
    incident = ctx.report.open(host, token, "fence_start", f"fencing: {view.reason}",
                               state=IncidentState.FENCING, counts={FENCE_ATTEMPTS: 1})
    attempt = ctx.report.attempt(incident)
    # once per incident: a retry (or a new leader's fence) does not say it again
    ctx.report.emit("host_failed", host=host, reason=view.reason, incident_id=incident)
    try:
        driver = ctx.fencer.driver_name(host)  # raises for a host not in the inventory
    except exceptions.InstanceHAError as e:
        ctx.report.record(host, "fence_error", str(e), state=IncidentState.FENCE_FAILED,
                          action=e.action.value)
        raise
    ctx.report.emit("fence_start", host=host, driver=driver, incident_id=incident,
                    attempt=attempt)
    LOG.warning("host=%s fencing (token %d): %s", host, token, view.reason)
    verify()  # re-checked right before the power-off
    failed_since = ctx.clock.utcnow() - datetime.timedelta(
        seconds=ctx.clock.monotonic() - view.since)
    try:
        evidence = ctx.fencer.power_off(host)
    except exceptions.InstanceHAError as e:
        attested = ctx.attestations.since(host, failed_since) if ctx.attestations else None
        ctx.report.count("fence", "attested" if attested is not None else "error")
        if attested is None:
            ctx.report.emit("fence_error", host=host, driver=driver, incident_id=incident,
                            error=str(e), retrying=True, attempt=attempt)
            ctx.report.record(host, "fence_error", f"{driver}: {e}",
                              state=IncidentState.FENCE_FAILED, action=e.action.value,
                              driver=driver)
            raise
        return _attested(ctx, host, svc, verify, incident, attested, e)
    driver, devices = evidence.driver, ", ".join(evidence.devices)
    where = f"level {evidence.level} of {evidence.levels} ({devices})"
    LOG.warning("host=%s fenced: %s read back %s after %d request(s) in %.2f s, %s", host,
                driver, evidence.read_back.value, evidence.attempts, evidence.duration, where)
    ctx.report.emit("fence_end", host=host, driver=driver, incident_id=incident,
                    duration=evidence.duration, level=evidence.level,
                    devices=evidence.devices)
    ctx.report.count("fence", "ok", evidence.duration)
    ctx.report.fenced_by(evidence.level, evidence.devices)
    skipped = f"; before: {'; '.join(evidence.failed_levels)}" if evidence.failed_levels \
        else ""
    ctx.report.record(host, "fence_ok", f"power {evidence.read_back.value} read back via "
                      f"{driver}, {where}, after {evidence.attempts} request(s) in "
                      f"{evidence.duration:.2f} s{skipped}",
                      fence={"driver": driver, "read_back": evidence.read_back.value,
                             "attempts": evidence.attempts,
                             "duration": round(evidence.duration, 3),
                             "level": evidence.level, "levels": evidence.levels,
                             "devices": list(evidence.devices),
                             "failed_levels": list(evidence.failed_levels)})
    note = f"power {evidence.read_back.value} read back via {driver} level " \
           f"{evidence.level} by {ctx.settings.name}"
    return _force_down(ctx, host, svc, verify, note, "nova-compute forced down and marked "
                       "fenced")


def _attested(ctx: StageContext, host, svc, verify, incident, attested, error):
    """The BMC cannot confirm, an operator did: audited, and said everywhere."""
    # identity: who ZooKeeper let write the attestation (authenticated); by: the
    # login the CLI stamped (a claim)
    who = (f"{attested.get('identity', 'unknown identity')} (login "
           f"{attested.get('by', '?')}): {attested.get('reason', '')}")
    LOG.error("host=%s fence NOT confirmed by the BMC (%s); power-off ATTESTED by "
              "operator %s", host, error, who)
    ctx.report.emit("fence_end", host=host, driver="operator-attestation", incident_id=incident)
    done = _force_down(ctx, host, svc, verify, f"power-off attested by {who}",
                       f"BMC could not confirm ({error}); power-off attested by operator "
                       f"{who}; forced down and marked fenced",
                       fence={"driver": "operator-attestation", "by": attested.get("by"),
                              "identity": attested.get("identity"),
                              "reason": attested.get("reason"), "bmc_error": str(error)},
                       how=" on attestation")
    if ctx.attestations is not None:  # attested through them: they are there
        ctx.attestations.consume(host)
    return done


def _force_down(ctx: StageContext, host, svc, verify, note: str, journal_text: str,
                how: str = "", **extra):
    token = verify()
    reason = ctx.marker(mk.MarkerState.FENCED, token, note)
    ctx.guarded(verify).force_down(host, reason)
    if ctx.failures is not None:
        ctx.failures.record(host)
    ctx.report.record(host, "forced_down", journal_text, state=IncidentState.FENCED, **extra)
    LOG.warning("host=%s forced down and marked fenced%s (token %d)", host, how, token)
    return dataclasses.replace(svc, forced_down=True, status="disabled", disabled_reason=reason)
