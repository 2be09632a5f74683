"""Tenant alarms on the mini-cloud: Ceilometer and Aodh, opt-in.

    tele = Telemetry(cloud).up()          # install.sh + telemetry/up.sh + a probe
    hook = Webhook()                      # records what Aodh posts, on 127.0.0.1
    a = tele.tenant("vnf-a")              # a project and a member-role user
    a.event_alarm("a-instances", "instanceha.instance.*", hook.url("a"))
    ...                                   # a host fails
    hook.events("a")                      # the events Aodh's notifier delivered
    tele.converted(incident_id=...)       # what Ceilometer made of each notification

Ceilometer's notification agent runs with instanceha's shipped
``etc/ceilometer/event_definitions.yaml`` and ``event_pipeline.yaml`` (plus a
file publisher, so a test can see an event that no tenant may receive);
``tools/minicloud/telemetry/`` holds the venv, the configs and ``up.sh``. The
services' pids are in the mini-cloud's pid dir: ``MiniCloud.down()`` stops them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import procs  # noqa: E402
from harness.minicloud import MINICLOUD_DIR, MiniCloud, MiniCloudError, _run  # noqa: E402

TELEMETRY_DIR = os.path.join(MINICLOUD_DIR, "telemetry")
SERVICES = ("aodh-api", "aodh-listener", "aodh-notifier", "ceilometer-notification")
ALARMING = "alarming"


def traits(event: dict) -> dict:
    """{name: value} of an event as Aodh's notifier or Ceilometer's file
    publisher hands it over (traits as [name, type, value] or dicts)."""
    out = {}
    for t in event.get("traits", ()):
        if isinstance(t, dict):
            out[t["name"]] = t["value"]
        else:
            out[t[0]] = t[2]
    return out


@dataclasses.dataclass(frozen=True)
class Post:
    path: str
    body: dict
    at: float
    """time.monotonic() when it was received."""

    @property
    def event(self) -> dict:
        """The event that fired an event alarm (Aodh's ``reason_data``)."""
        return self.body.get("reason_data", {}).get("event", {})


class Webhook:
    """An HTTP server on 127.0.0.1 that records every POST and answers 200."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._posts: list[Post] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"unparsed": raw.decode(errors="replace")}
                with hook._lock:
                    hook._posts.append(Post(self.path.strip("/"), body, time.monotonic()))
                    hook._lock.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def posts(self, path: str | None = None) -> list[Post]:
        with self._lock:
            return [p for p in self._posts if path is None or p.path == path]

    def events(self, path: str | None = None) -> list[dict]:
        """[{"event_type": ..., "message_id": ..., "traits": {...}}] in arrival order."""
        return [dict(p.event, traits=traits(p.event)) for p in self.posts(path)]

    def wait(self, predicate, timeout: float, what: str):
        """Until ``predicate(self)`` is true (returns its value), woken by each post."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                value = predicate(self)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
                self._lock.wait(min(left, 1.0))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclasses.dataclass
class Tenant:
    """A project with one member-role user: what a VNF manager runs as."""

    name: str
    project_id: str
    user_id: str
    username: str
    password: str = dataclasses.field(repr=False)
    auth_url: str
    region: str

    _session: object = dataclasses.field(default=None, repr=False, compare=False)

    def session(self):
        """One keystoneauth session (one token) for this user, reused."""
        if self._session is None:
            from keystoneauth1 import session
            from keystoneauth1.identity import v3

            self._session = session.Session(auth=v3.Password(
                auth_url=self.auth_url, username=self.username, password=self.password,
                user_domain_name="Default", project_id=self.project_id))
        return self._session

    def _aodh(self, method: str, path: str, **kw):
        r = self.session().request(
            path, method, endpoint_filter={"service_type": ALARMING, "interface": "public",
                                           "region_name": self.region},
            raise_exc=False, **kw)
        if r.status_code >= 400:
            raise MiniCloudError(f"aodh {method} {path} as {self.username}: "
                                 f"{r.status_code} {r.text[:500]}")
        return r

    def event_alarm(self, name: str, event_type: str, url: str,
                    query: tuple[dict, ...] = ()) -> dict:
        """An event alarm of this project calling ``url`` on every matching event
        (``repeat_actions``: not only on the first)."""
        return self._aodh("POST", "/v2/alarms", json={
            "name": name, "type": "event", "severity": "critical",
            "event_rule": {"event_type": event_type, "query": list(query)},
            "alarm_actions": [url], "repeat_actions": True}).json()

    def alarms(self) -> list[dict]:
        return self._aodh("GET", "/v2/alarms").json()

    def delete_alarm(self, alarm_id: str) -> None:
        self._aodh("DELETE", f"/v2/alarms/{alarm_id}")


class Telemetry:
    """Ceilometer and Aodh on a running mini-cloud."""

    def __init__(self, cloud: MiniCloud) -> None:
        self.cloud = cloud
        self._tenants: list[Tenant] = []
        self._admin = None

    @property
    def admin(self):
        """openstacksdk as the cloud admin, one connection reused."""
        if self._admin is None:
            self._admin = self.cloud.connection()
        return self._admin

    @staticmethod
    def install() -> None:
        _run([os.path.join(TELEMETRY_DIR, "install.sh")], "telemetry/install.sh", 900)

    def running(self) -> bool:
        return os.path.exists(self._info_path) and \
            all(self.cloud.pid(n) is not None for n in SERVICES)

    def up(self, timeout: float = 300.0) -> Telemetry:
        """Start the services (unless they run already) and wait until an event
        emitted on the bus reaches an alarm's webhook."""
        if not self.running():
            self.install()
            _run([os.path.join(TELEMETRY_DIR, "up.sh"), self.cloud.run_dir],
                 "telemetry/up.sh", timeout)
        self.probe()
        return self

    @property
    def _info_path(self) -> str:
        return os.path.join(self.cloud.run_dir, "telemetry.json")

    @property
    def info(self) -> dict:
        with open(self._info_path) as f:
            return json.load(f)

    # -- tenants ---------------------------------------------------------------

    def tenant(self, prefix: str) -> Tenant:
        """A new project and a user with only the ``member`` role in it."""
        idn = self.admin.identity
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        project = idn.create_project(name=name, domain_id="default")
        password = secrets.token_urlsafe(16)
        user = idn.create_user(name=f"{name}-vnfm", password=password, domain_id="default",
                               default_project_id=project.id)
        idn.assign_project_role_to_user(project, user, idn.find_role("member"))
        ep = self.cloud.endpoints
        t = Tenant(name, project.id, user.id, user.name, password, ep["auth"]["auth_url"],
                   ep["region_name"])
        self._tenants.append(t)
        return t

    def admin_in(self, tenant: Tenant):
        """openstacksdk as the cloud admin scoped to the tenant's project (to boot
        its servers on a chosen host, which only an admin may do)."""
        import openstack

        idn = self.admin.identity
        idn.assign_project_role_to_user(tenant.project_id, idn.find_user("admin"),
                                        idn.find_role("admin"))
        ep = self.cloud.endpoints
        auth = dict(ep["auth"], project_name=None, project_id=tenant.project_id)
        auth.pop("project_name")
        auth.pop("project_domain_name", None)
        return openstack.connect(auth=auth, region_name=ep["region_name"], interface="public",
                                 identity_api_version="3")

    def delete_tenants(self) -> None:
        for t in self._tenants:
            self.admin.identity.delete_user(t.user_id, ignore_missing=True)
            self.admin.identity.delete_project(t.project_id, ignore_missing=True)
        self._tenants.clear()

    # -- what Ceilometer made of the notifications ----------------------------------

    def converted(self, **match) -> list[dict]:
        """The events Ceilometer built (file publisher), whose traits match."""
        return [e for e in self._converted() if all(e["traits"].get(k) == v
                                                     for k, v in match.items())]

    def converted_message(self, message_id: str) -> list[dict]:
        """What Ceilometer built of one notification (its message_id)."""
        return [e for e in self._converted() if e.get("message_id") == message_id]

    def _converted(self) -> list[dict]:
        try:
            with open(self.info["events_file"]) as f:
                lines = [json.loads(x) for x in f if x.strip()]
        except FileNotFoundError:
            return []
        return [dict(e, traits=traits(e)) for e in lines]

    # -- readiness ---------------------------------------------------------------

    def probe(self, timeout: float = 120.0) -> float:
        """An instance event of a probe tenant, emitted on the bus as the
        controller emits it, must reach that tenant's alarm webhook: the whole
        path (RabbitMQ, Ceilometer, Aodh's listener and notifier) works.
        Returns the seconds it took."""
        from instanceha.notify import events

        hook = Webhook()
        tenant = self.tenant("telemetry-probe")
        bus = Emitter(self.cloud.endpoints["transport_url"])
        try:
            tenant.event_alarm("probe", "instanceha.instance.*", hook.url("probe"))
            t0 = time.monotonic()
            vm = str(uuid.uuid4())
            bus.emit(events.recovery_required(
                host="telemetry-probe", incident_id=f"probe-{vm[:8]}", instance_id=vm,
                project_id=tenant.project_id, dry_run=True))
            hook.wait(lambda h: any(e["traits"].get("instance_id") == vm for e in h.events()),
                      timeout, "the probe event at its tenant's webhook (logs: "
                      f"{self.cloud.run_dir}/log/{{ceilometer-notification,aodh-*}}.log)")
            return time.monotonic() - t0
        finally:
            bus.close()
            hook.close()
            self.delete_tenants()


class Emitter:
    """instanceha's own Notifier (outbox, oslo.messaging driver) on a bus: what
    the controller runs, for probes, barriers and benchmarks."""

    def __init__(self, transport_url: str, host: str = "telemetry-harness") -> None:
        import tempfile

        from oslo_config import cfg

        from instanceha.conf import default as conf_default
        from instanceha.conf import notifications as conf_notifications
        from instanceha.notify import notifier

        fd, path = tempfile.mkstemp(prefix="ih-emitter-", suffix=".conf")
        with os.fdopen(fd, "w") as f:
            f.write(f"[DEFAULT]\nhost = {host}\ntransport_url = {transport_url}\n"
                    "[oslo_messaging_notifications]\ndriver = messagingv2\n")
        try:
            c = cfg.ConfigOpts()
            conf_default.register_opts(c)
            conf_notifications.register_opts(c)
            c(["--config-file", path], default_config_files=[])
            conf_notifications.register_oslo_messaging_opts(c)
        finally:
            os.unlink(path)
        self.notifier = notifier.make_notifier(c, conf_notifications.bus_settings(c),
                                               conf_notifications.delivery_policy(c)).start()

    def emit(self, event) -> str | None:
        return self.notifier.emit(event)

    def close(self) -> None:
        self.notifier.close(timeout=10)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    return procs.wait_for(predicate, timeout, what, interval=interval)
