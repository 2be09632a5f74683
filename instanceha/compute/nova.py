"""The Nova adapter: one keystoneauth session, pinned microversions, typed errors.

Every call names the compute API microversion it was written for, instead of
letting openstacksdk negotiate the newest one (which changes behaviour: from
2.95 an evacuated server ends SHUTOFF):

* 2.53  services by id: force down, enable/disable with a reason
* 2.41  aggregates with their uuid and metadata
* 2.59  migrations with uuid, paging and the ``instance_uuid`` filter
* 2.73  servers with ``locked`` (2.9), the flavor's extra specs (2.47) and
        ``host`` filtering for admins
* 2.94  evacuate: the newest version that keeps an ACTIVE server ACTIVE
* 2.58  instance actions with ``updated_at`` (who stopped, rebooted, started)
* 2.53  hypervisors with their service's host and ``host_ip`` (the second
        source's probe addresses)

Failures become ``instanceha.compute.exceptions`` errors whose ``action`` says
whether to retry (Nova away, 5xx, 409) or escalate (403, 404, bad config).

Writes (PUT, POST) are never re-sent by the transport: keystoneauth's
``connect_retries`` and ``status_code_retries`` also fire after a *read*
timeout, when Nova may have executed the request, so a write is sent with
both at 0 and retried only by instanceha, which first reads whether the
earlier one took effect (a service update here; an evacuation by its
migration records, in ``evacuation.py``). Reads keep the configured retries.

What the recovery reads of every failed host alike (aggregates, image
properties) is cached for ``cache_ttl`` seconds and shared across hosts.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from keystoneauth1 import exceptions as ks_exc

from instanceha.backoff import Backoff
from instanceha.clock import SYSTEM, Clock
from instanceha.compute import exceptions as exc
from instanceha.compute.cache import TTLCache
from instanceha.compute.model import ComputeService, InstanceAction, Migration, Server
from instanceha.engine.instance_policy import InstanceFacts

LOG = logging.getLogger(__name__)

MV_SERVICES = "2.53"
MV_AGGREGATES = "2.41"
MV_MIGRATIONS = "2.59"
MV_SERVERS = "2.73"
MV_EVACUATE = "2.94"  # >= 2.95 leaves evacuated servers SHUTOFF
MV_INSTANCE_ACTIONS = "2.58"
MV_HYPERVISORS = "2.53"
PAGE = 1000
WRITE_TRIES = 3  # a service update whose answer was lost: read back, then send again
WRITE_RETRY = Backoff(0.5, 1.0)  # seconds before the 2nd try, doubled for the 3rd


F = TypeVar("F", bound=Callable[..., object])


def mutating(method: F) -> F:
    """Marks a ``NovaClient`` method that changes Nova: only a leader calls it,
    and ``controller.stages.context.Guarded`` re-checks leadership before each
    call (``mutating_methods``), so a new mutating method cannot be forgotten
    there (a unit test checks that every method that writes is marked)."""
    method.mutating = True  # type: ignore[attr-defined]
    return method


def mutating_methods(cls: type) -> frozenset[str]:
    """The names of ``cls``'s methods marked ``@mutating``."""
    return frozenset(name for klass in reversed(cls.__mro__) for name, attr in vars(klass).items()
                     if getattr(attr, "mutating", False))


class NovaClient:
    """Nova as instanceha needs it. Build once (``conf.nova.nova_client``) and share."""

    def __init__(self, connection, cache_ttl: float = 30.0,
                 clock: Clock = SYSTEM, recorder=None) -> None:
        self._conn = connection  # its proxies authenticate lazily, on first use
        self._clock = clock
        self.recorder = recorder
        """An ``ApiCalls`` (``instanceha.compute.calls``): told of every request
        before it is sent and when it is answered (status None: no answer)."""
        self._service_ids: dict[str, str] = {}
        self._ids_lock = threading.Lock()
        self._aggregates = TTLCache(cache_ttl, clock)
        self._images = TTLCache(cache_ttl, clock)

    # -- plumbing ------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, operation: str):
        """keystoneauth/transport failures -> typed errors (no secrets in them)."""
        try:
            yield
        except (ks_exc.ConnectionError, ks_exc.RetriableConnectionFailure) as e:
            raise exc.NovaUnavailable(operation=operation, reason=type(e).__name__,
                                      unsent="Connection refused" in str(e))
        except ks_exc.Unauthorized as e:
            raise exc.NovaAuthError(operation=operation, reason=type(e).__name__)
        except (ks_exc.EndpointNotFound, ks_exc.CatalogException, ks_exc.AuthPluginException,
                ks_exc.DiscoveryFailure) as e:
            raise exc.NovaConfigError(operation=operation, reason=f"{type(e).__name__}: {e}")
        except ks_exc.HttpError as e:  # from keystone, while authenticating
            cls = exc.NovaServerError if (e.http_status or 0) >= 500 else exc.NovaAuthError
            raise cls(operation=operation, status=e.http_status, reason=type(e).__name__)

    def _call(self, method: str, url: str, operation: str, microversion: str | None,
              json: Mapping | None = None, service: str = "compute"):
        kwargs: dict = {}
        if method in ("PUT", "POST", "DELETE"):
            # no transport re-send of a write: after a read timeout Nova may have done it
            kwargs.update(connect_retries=0, status_code_retries=0)
        handle = self._begin(service, method, url)
        status = None
        try:
            with self._errors(operation):
                resp = getattr(self._conn, service).request(
                    url, method, microversion=microversion, json=json, raise_exc=False,
                    **kwargs)
            status = resp.status_code
            return resp
        finally:
            if handle is not None:
                try:
                    self.recorder.end(handle, status)
                except Exception:  # counting must never fail a call
                    LOG.exception("API call recorder failed")

    def _begin(self, service: str, method: str, url: str):
        if self.recorder is None:
            return None
        try:
            return self.recorder.begin(service, method, url)
        except Exception:  # counting must never fail a call
            LOG.exception("API call recorder failed")
            return None

    def _nova(self, method, url, operation, microversion, json=None):
        """A compute API call; an HTTP error status raises its typed error."""
        return exc.raise_for_response(self._call(method, url, operation, microversion, json),
                                      operation)

    def _paged(self, url: str, key: str, operation: str, microversion: str) -> list[dict]:
        items: list[dict] = []
        sep = "&" if "?" in url else "?"
        page_url = f"{url}{sep}limit={PAGE}"
        while True:
            batch = self._nova("GET", page_url, operation, microversion).json().get(key, [])
            items.extend(batch)
            if len(batch) < PAGE:
                return items
            page_url = f"{url}{sep}limit={PAGE}&marker={batch[-1].get('uuid') or batch[-1]['id']}"

    # -- services ------------------------------------------------------------

    def services(self, host: str | None = None) -> list[ComputeService]:
        """Every nova-compute service (or the one of ``host``) with its state."""
        url = "/os-services?binary=nova-compute" + (f"&host={host}" if host else "")
        body = self._nova("GET", url, "list compute services", MV_SERVICES).json()
        found = [ComputeService.from_api(s) for s in body.get("services", [])]
        with self._ids_lock:
            self._service_ids.update((s.host, s.id) for s in found)
        return found

    def service(self, host: str) -> ComputeService:
        found = [s for s in self.services(host) if s.host == host]
        if not found:
            raise exc.ServiceNotFound(operation="find compute service", host=host)
        return found[0]

    def _service_id(self, host: str) -> str:
        with self._ids_lock:
            known = self._service_ids.get(host)
        return known if known is not None else self.service(host).id

    def _update_service(self, host: str, body: dict, operation: str) -> ComputeService:
        """PUT ``body`` on the host's service. The service id comes from the last
        list (no extra read on the recovery's path). When the answer is lost
        (Nova unreachable or timing out), the service is read back: a change
        that took effect is not sent again; otherwise it is sent again, up to
        ``WRITE_TRIES`` times in all."""
        retries = WRITE_RETRY.start()
        for attempt in range(1, WRITE_TRIES + 1):
            service_id = self._service_id(host)
            try:
                resp = self._nova("PUT", f"/os-services/{service_id}", f"{operation} {host}",
                                  MV_SERVICES, json=body)
            except exc.NovaNotFound:
                with self._ids_lock:
                    stale = self._service_ids.pop(host, None) == service_id
                if not stale or attempt == WRITE_TRIES:
                    raise
                continue  # the service was re-created under a new id: look it up again
            except exc.NovaUnavailable as e:
                if attempt == WRITE_TRIES:
                    raise
                try:
                    now = self.service(host)
                except exc.ComputeError:
                    now = None
                if now is not None and _applied(now, body):
                    LOG.info("%s %s: the answer was lost (%s) but Nova had applied it: "
                             "not sent again", operation, host, e)
                    return now
                delay = retries.next()
                LOG.info("%s %s failed (%s), not applied: sending it again in %.1f s",
                         operation, host, e, delay)
                self._clock.wait(delay)
                continue
            return ComputeService.from_api(resp.json()["service"])
        raise AssertionError("unreachable")  # the loop returns or raises

    @mutating
    def force_down(self, host: str, reason: str | None = None) -> ComputeService:
        """Mark the host's nova-compute down at once (the host must be fenced)
        and, with a reason, disable it with that reason (the durable marker)."""
        body: dict = {"forced_down": True}
        if reason is not None:
            body.update(status="disabled", disabled_reason=reason)
        return self._update_service(host, body, "force down")

    @mutating
    def disable(self, host: str, reason: str) -> ComputeService:
        """Disable (or re-word the reason of) the host's service; forced_down unchanged."""
        return self._update_service(host, {"status": "disabled", "disabled_reason": reason},
                                    "disable")

    @mutating
    def enable(self, host: str, unset_forced_down: bool = True) -> ComputeService:
        """Enable the host's service again, unsetting forced_down by default."""
        body: dict = {"status": "enabled"}
        if unset_forced_down:
            body["forced_down"] = False
        return self._update_service(host, body, "enable")

    @mutating
    def unset_forced_down(self, host: str) -> ComputeService:
        return self._update_service(host, {"forced_down": False}, "unset forced down")

    # -- servers -------------------------------------------------------------

    def host_addresses(self) -> dict[str, str]:
        """Each compute host's management address: its hypervisor's ``host_ip``
        (nova-compute's ``my_ip``)."""
        out = {}
        for h in self._paged("/os-hypervisors/detail", "hypervisors", "listing hypervisors",
                             MV_HYPERVISORS):
            host = (h.get("service") or {}).get("host")
            if host and h.get("host_ip"):
                out[host] = h["host_ip"]
        return out

    def servers_on_host(self, host: str) -> list[Server]:
        """Every server Nova places on ``host``, in all projects."""
        items = self._paged(f"/servers/detail?all_tenants=1&host={host}", "servers",
                            f"list servers on {host}", MV_SERVERS)
        return [Server.from_api(s) for s in items if s.get("OS-EXT-SRV-ATTR:host") == host]

    def server(self, server_id: str) -> Server:
        resp = self._nova("GET", f"/servers/{server_id}", f"show server {server_id}", MV_SERVERS)
        return Server.from_api(resp.json()["server"])

    def _action(self, server_id: str, body: dict, operation: str, microversion: str) -> None:
        self._nova("POST", f"/servers/{server_id}/action", f"{operation} {server_id}",
                   microversion, json=body)

    @mutating
    def evacuate(self, server_id: str, host: str | None = None) -> None:
        """Ask Nova to rebuild the server elsewhere (``host``: a chosen target,
        still checked by the scheduler). Accepted is not done: verify it."""
        body = {"evacuate": {"host": host} if host else {}}
        self._action(server_id, body, "evacuate", MV_EVACUATE)

    @mutating
    def reset_state(self, server_id: str, state: str = "active") -> None:
        if state not in ("active", "error"):
            raise ValueError(f"reset state to 'active' or 'error', not {state!r}")
        self._action(server_id, {"os-resetState": {"state": state}}, "reset state",
                     MV_SERVERS)

    @mutating
    def stop(self, server_id: str) -> None:
        self._action(server_id, {"os-stop": None}, "stop", MV_SERVERS)

    @mutating
    def reboot(self, server_id: str, hard: bool = True) -> None:
        """A hard reboot powers the guest off and on again (from any restartable
        vm_state); Nova answers 409 while another task runs on the server."""
        body = {"reboot": {"type": "HARD" if hard else "SOFT"}}
        self._action(server_id, body, "hard reboot" if hard else "reboot", MV_SERVERS)

    @mutating
    def start(self, server_id: str) -> None:
        self._action(server_id, {"os-start": None}, "start", MV_SERVERS)

    def instance_actions(self, server_id: str) -> list[InstanceAction]:
        """What was done to the server (stop, start, reboot...), newest first."""
        body = self._nova("GET", f"/servers/{server_id}/os-instance-actions",
                          f"list actions of server {server_id}", MV_INSTANCE_ACTIONS).json()
        actions = [InstanceAction.from_api(a) for a in body.get("instanceActions", [])]
        return sorted(actions, key=lambda a: a.start_time.timestamp() if a.start_time else 0.0,
                      reverse=True)

    def evacuations(self, server_id: str | None = None, source_host: str | None = None,
                    changes_since: datetime.datetime | None = None) -> list[Migration]:
        """Evacuation migration records, newest first (``changes_since``: only
        those updated since then, one bulk read for a whole failed host)."""
        url = "/os-migrations?migration_type=evacuation"
        if server_id:
            url += f"&instance_uuid={server_id}"
        if source_host:
            url += f"&source_compute={source_host}"
        if changes_since is not None:
            stamp = changes_since.astimezone(datetime.timezone.utc).replace(tzinfo=None)
            url += f"&changes-since={stamp.isoformat(timespec='seconds')}"
        items = self._nova("GET", url, "list evacuations", MV_MIGRATIONS).json()
        migs = [Migration.from_api(m) for m in items.get("migrations", [])]
        return sorted(migs, key=lambda m: m.id, reverse=True)

    # -- what the per-instance policy reads ------------------------------------

    def _all_aggregates(self, fresh: bool = False) -> list[dict]:
        """Every aggregate (name, hosts, metadata): one read per ``cache_ttl``."""
        read = lambda: self._nova("GET", "/os-aggregates", "list aggregates",  # noqa: E731
                                  MV_AGGREGATES).json().get("aggregates", [])
        return self._aggregates.get("all", read, fresh=fresh)

    def aggregates_of(self, host: str) -> dict[str, dict[str, str]]:
        return {a["name"]: dict(a.get("metadata") or {}) for a in self._all_aggregates()
                if host in (a.get("hosts") or [])}

    def host_aggregates(self, fresh: bool = True) -> dict[str, frozenset[str]]:
        """The names of the aggregates of every host that is in one (spare matching,
        the guard's grouping: read afresh unless ``fresh`` is False)."""
        found: dict[str, set[str]] = {}
        for a in self._all_aggregates(fresh=fresh):
            for h in a.get("hosts") or []:
                found.setdefault(h, set()).add(a["name"])
        return {h: frozenset(names) for h, names in found.items()}

    def image_properties(self, image_id: str) -> dict[str, object]:
        def read() -> dict[str, object]:
            resp = self._call("GET", f"/images/{image_id}", f"show image {image_id}", None,
                              service="image")
            if resp.status_code == 404:
                return {}  # image deleted since boot: no properties to read
            return dict(exc.raise_for_response(resp, f"show image {image_id}").json())

        return self._images.get(image_id, read)

    def instance_facts(self, servers: Iterable[Server], host: str,
                       enough: Callable[[InstanceFacts], bool] | None = None
                       ) -> dict[str, InstanceFacts]:
        """The policy inputs of each server (one image GET per distinct image).
        ``enough(facts)``: True when a server's own facts (metadata, flavor)
        decide, so its image and the host's aggregates are not read for it
        (each read is a call; on a busy cloud the first image read of a
        recovery was seen taking 8 s)."""
        aggregates = None
        images: dict[str, dict] = {}
        facts = {}
        for s in servers:
            own = InstanceFacts(server_metadata=s.metadata,
                                flavor_extra_specs=s.flavor_extra_specs)
            if enough is not None and enough(own):
                facts[s.id] = own
                continue
            if aggregates is None:
                aggregates = self.aggregates_of(host)
            if s.image_id and s.image_id not in images:
                images[s.image_id] = self.image_properties(s.image_id)
            facts[s.id] = InstanceFacts(
                server_metadata=s.metadata, flavor_extra_specs=s.flavor_extra_specs,
                image_properties=images.get(s.image_id, {}) if s.image_id else {},
                aggregates=aggregates)
        return facts


def _applied(svc: ComputeService, body: Mapping) -> bool:
    """Does the service already show every field of a PUT ``body``?"""
    if "forced_down" in body and svc.forced_down != bool(body["forced_down"]):
        return False
    if "status" in body and svc.status != body["status"]:
        return False
    return "disabled_reason" not in body or svc.disabled_reason == body["disabled_reason"]
