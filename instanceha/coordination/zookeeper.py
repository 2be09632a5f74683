"""ZooKeeper backend, on kazoo directly: the coordinator that composes the
``zk_*`` modules behind the contract of ``instanceha.coordination.base``.

Why not tooz (measured on this project's machines, see doc/source/architecture.rst):
tooz's ``heartbeat()`` writes nothing, so a hung agent is never seen; it polls
instead of watching; it never re-joins a member whose session expired; and a
tooz leader frozen past its session timeout still believes it leads. So the
layout and the recipes are ours, one module each:

===================  =====================================================================
``zk_session``       the kazoo client: connection state, granted session timeout, TLS,
                     the identities it authenticates as
``credentials``      identities, the key they derive from, credentials files
``zk_acl``           the ACL of every kind of node, per identity
``zk_layout``        the tree (layout 2) and the kind of each node; created by controllers
``zk_members``       the agent's membership in its own slot, index entry, stall reports
``zk_hosts``         the host registry (slots, provisioning) and fence history
``zk_index``         one children watch on one parent: added and removed names
``zk_view``          the controller's view: four re-lists after any connection loss,
                     the consistency audit, the published snapshot, change log
``zk_trust``         membership believed only when verified against the host's own
                     slot; stalls; liveness facts; forgery and tampering alerts
``zk_election``      ``<root>/election/c-<seq>``: the lowest leads, its czxid is the
                     fencing token
``zk_control``       ``<root>/control/{operator,controller}`` and ``<root>/status``
``zk_incidents``     the incident journal ``<root>/incidents``
``zk_guest_events``  guest failures in each host's slot, the doorbell, restart records
===================  =====================================================================

Threads: kazoo calls watches and state listeners on its own threads. They
only record facts and never block (the agent's re-creation of a deleted
membership node is asynchronous); every blocking call happens in the caller's
thread, so the owner's loop stays level-triggered.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from instanceha import exceptions
from instanceha.coordination import base, credentials
from instanceha.coordination.zk_acl import AclModel
from instanceha.coordination.zk_control import ControlNode
from instanceha.coordination.zk_election import ZooKeeperLeadership
from instanceha.coordination.zk_guest_events import ZooKeeperGuestEventStore
from instanceha.coordination.zk_hosts import HostRegistry
from instanceha.coordination.zk_incidents import ZooKeeperIncidentStore
from instanceha.coordination.zk_layout import INCIDENTS, Layout
from instanceha.coordination.zk_members import Membership
from instanceha.coordination.zk_session import (  # noqa: F401  (parse_hosts: the public helper)
    TlsSettings,
    ZooKeeperSession,
    parse_hosts,
    translated,
)
from instanceha.coordination.zk_view import ClusterView

LOG = logging.getLogger(__name__)


class ZooKeeperCoordinator(base.Coordinator):
    def __init__(self, url: str, *, role: str = credentials.CONTROLLER,
                 creds: credentials.Credentials | None = None,
                 tls: TlsSettings | None = None, **kwargs) -> None:
        """``role``: what this client is (controller, agent, operator); it must be
        the role of ``creds`` when given. Without credentials every node is open
        to anyone (test beds only: the daemons refuse it unless told)."""
        super().__init__(url, **kwargs)
        if creds is not None and creds.role != role:
            raise exceptions.CredentialsError(
                file=creds.source,
                reason=f"holds the credentials of role {creds.role}, used by a {role}")
        self.role = role
        self.acls = AclModel(creds)
        self.session = ZooKeeperSession(
            url, session_timeout=self.session_timeout, connect_timeout=self.connect_timeout,
            reconnect_max_delay=self.reconnect_max_delay, root_path=self.root_path,
            clock=self.clock, acls=self.acls, tls=tls)
        self.where = self.session.where
        self.client = self.session.client
        self.layout = Layout(self.client, self.root_path, self.acls, self.where)
        self.registry = HostRegistry(self.session)
        self.membership = Membership(self.session, self.layout, self.clock)
        self.control = ControlNode(self.session, role)
        self.view = ClusterView(self.session, self.control, self.consistency_interval,
                                self.clock)
        self._incidents = ZooKeeperIncidentStore(
            self.client, self.session.path(INCIDENTS), lambda: self.acls.acl("tree"))
        self.guests = ZooKeeperGuestEventStore(self.session)

    @property
    def identity(self) -> str:
        return self.acls.identity

    # -- connection --------------------------------------------------------
    def start(self) -> None:
        self.session.start()
        try:
            if self.role == credentials.CONTROLLER:
                self.layout.ensure()
            elif self.role == credentials.OPERATOR:
                self.layout.check()
        except Exception:
            self.session.stop()
            raise

    def stop(self) -> None:
        self.session.stop()

    @property
    def state(self) -> base.ConnectionState:
        return self.session.state

    @property
    def granted_session_timeout(self) -> float | None:
        return self.session.granted_session_timeout

    @property
    def session_id(self) -> int | None:
        return self.session.session_id

    def resume_session(self, credentials: base.SessionCredentials) -> None:
        self.session.resume(credentials)

    def session_credentials(self) -> base.SessionCredentials | None:
        return self.session.credentials

    def add_state_listener(self, listener: base.StateListener) -> None:
        self.session.add_state_listener(listener)

    # -- agent side --------------------------------------------------------
    @translated
    def join(self, member_id: str, capabilities: Mapping[str, object]) -> int:
        return self.membership.join(member_id, capabilities)

    def joined(self) -> bool:
        return self.membership.joined()

    @property
    def incarnation(self) -> int | None:
        return self.membership.incarnation

    @translated
    def update_capabilities(self, capabilities: Mapping[str, object]) -> None:
        self.membership.update_capabilities(capabilities)

    def report_stall(self, stalled_for: float | None) -> None:
        self.membership.report_stall(stalled_for)

    def end_session(self) -> None:
        self.membership.forget_session()
        try:
            self.client.stop()  # sends closeSession: the server drops the membership at once
        except Exception as e:  # the watchdog's thread: report, never raise
            LOG.warning("ending the session failed (%s): it will expire instead",
                        type(e).__name__)

    @translated
    def leave(self, reason: str, planned: bool = True) -> None:
        self.membership.leave(reason, planned)

    # -- controller side ---------------------------------------------------
    def snapshot(self) -> base.ClusterSnapshot:
        return self.view.snapshot()

    def stats(self) -> Mapping[str, float]:
        return dict(self.view.stats(), tampered=self.membership.tampered,
                    **{"forged-guest-event": self.guests.forged})

    @translated
    def update_control(self, changes: Mapping[str, object | None]) -> Mapping[str, object]:
        return self.control.update(changes)

    @translated
    def publish_status(self, status: Mapping[str, object]) -> None:
        self.control.publish_status(status)

    @translated
    def read_status(self) -> Mapping[str, object] | None:
        return self.control.read_status()

    @translated
    def record_failure(self, host: str, at: float, keep: int = 10) -> None:
        self.registry.record_failure(host, at, keep)

    @translated
    def forget_host(self, host: str) -> None:
        self.registry.forget(host)

    @translated
    def provision_host(self, host: str) -> bool:
        return self.registry.provision(host)

    # -- incident journal --------------------------------------------------
    @translated
    def incident_write(self, incident_id: str, summary: Mapping[str, object],
                       entries: Sequence[Mapping[str, object]] = ()) -> None:
        self._incidents.write(incident_id, summary, entries)

    @translated
    def incidents(self) -> dict[str, Mapping[str, object]]:
        return self._incidents.summaries()

    @translated
    def incident_entries(self, incident_id: str) -> list[Mapping[str, object]]:
        return self._incidents.entries(incident_id)

    @translated
    def incident_delete(self, incident_id: str) -> None:
        self._incidents.delete(incident_id)

    # -- guest failures ----------------------------------------------------
    @translated
    def guest_event_put(self, event):
        host = self.membership.member_id or (self.acls.creds.host if self.acls.creds else None)
        if host is None:
            raise exceptions.CoordinationError(reason="a guest failure before the agent "
                                               "knows its host (join first)")
        if not self.acls.knows_admins:
            self.membership.ensure_slot(host)
        return self.guests.put(host, event)

    @translated
    def guest_events(self):
        return self.guests.pending()

    @translated
    def guest_event_delete(self, event_id):
        self.guests.delete(event_id)

    @translated
    def guest_restarts(self, instance_id):
        return self.guests.restarts(instance_id)

    @translated
    def guest_restart_record(self, instance_id, at, keep=20):
        self.guests.record_restart(instance_id, at, keep)

    def leadership(self, candidate_id: str) -> base.Leadership:
        return ZooKeeperLeadership(self.session, candidate_id)
