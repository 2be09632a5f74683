"""The whole product on loopback, for the failover demo and the end-to-end
benchmark: ZooKeeper, the mini-cloud, one ipmi_sim BMC per compute, an agent
per compute, controllers and an ``instanceha listen`` consumer. One object
owns them all and tears them down in order (``close()``, or ``with``).

    with Stack("demo-", say=print) as st:
        st.start_zookeeper(); st.start_cloud(); st.start_bmcs()
        agents = {h: st.agent(h) for h in st.cloud.hosts}
        ctl = st.controller("ctl", extra={...})
        bus = st.listen()
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable

import yaml

from harness import daemons
from harness.bmc import IpmiSimBMC
from harness.minicloud import MiniCloud
from harness.prometheus import PrometheusServer
from harness.zookeeper import ZooKeeperServer

BIN = os.path.dirname(sys.executable)
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ")


class BusRecorder:
    """Reads ``instanceha listen --format json`` as it prints, stamping each
    notification with the (wall) time the consumer received it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.received: list[tuple[datetime.datetime, dict]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            try:
                self.received.append((datetime.datetime.now(), json.loads(raw)))
            except ValueError:
                continue

    def first(self, suffix: str, since: datetime.datetime,
              instances: set[str] | None = None) -> datetime.datetime | None:
        """When the first event ending in ``suffix`` (about one of ``instances``)
        arrived after ``since``."""
        for at, e in list(self.received):
            if at < since or not e.get("event_type", "").endswith(suffix):
                continue
            if instances is None or e.get("payload", {}).get("instance_id") in instances:
                return at
        return None

    def events(self, since: datetime.datetime):
        for at, e in list(self.received):
            if at >= since:
                payload = e.get("payload", {})
                what = payload.get("instance_id") or payload.get("host", "")
                yield at, "consumer", f"received {e.get('event_type')} {what}"


def log_times(text: str, pattern: str) -> list[datetime.datetime]:
    """The timestamps of the log lines (oslo.log format) matching ``pattern``."""
    found = []
    for line in text.splitlines():
        m = STAMP.match(line)
        if m and re.search(pattern, line):
            found.append(datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f"))
    return found


class Stack:
    def __init__(self, prefix: str = "instanceha-", keep: bool = False,
                 say: Callable[[str], None] = print) -> None:
        self.work = tempfile.mkdtemp(prefix=prefix)
        self.keep = keep
        self.say = say
        self.zk: ZooKeeperServer | None = None
        self.cloud: MiniCloud | None = None
        self.bmcs: dict[str, IpmiSimBMC] = {}
        self.inventory: str | None = None
        self.started: list[daemons.Daemon] = []
        self.listener: subprocess.Popen | None = None
        self.bus: BusRecorder | None = None
        self.prometheus: PrometheusServer | None = None
        self._conn = None
        self.servers: list[str] = []  # deleted at close

    # -- parts -----------------------------------------------------------------
    def start_zookeeper(self, tick_ms: int = 500) -> ZooKeeperServer:
        self.zk = ZooKeeperServer(os.path.join(self.work, "zookeeper"), tick_ms=tick_ms).start()
        return self.zk

    def start_cloud(self, prefix: str = "stack-", computes: int = 3) -> MiniCloud:
        MiniCloud.install()
        self.cloud = MiniCloud.in_run_dir(prefix=prefix, computes=computes).up()
        return self.cloud

    @property
    def conn(self):
        if self._conn is None:
            self._conn = self.cloud.connection()
        return self._conn

    def start_bmcs(self, hosts=None, password: Callable[[str], str] | None = None,
                   timeout: float = 3) -> str:
        """An ipmi_sim BMC per host; writes the fencing inventory (mode 0600)."""
        inventory = {"hosts": {}}
        for h in hosts or self.cloud.hosts:
            kwargs = {"password": password(h)} if password else {}
            self.bmcs[h] = IpmiSimBMC(os.path.join(self.work, "bmc"), name=h, **kwargs).start()
            inventory["hosts"][h] = self.bmcs[h].entry(timeout=timeout)
        self.inventory = os.path.join(self.work, "fencing-inventory.yaml")
        with open(self.inventory, "w") as f:
            yaml.safe_dump(inventory, f)
        os.chmod(self.inventory, 0o600)
        return self.inventory

    def start_prometheus(self, interval: float = 1.0) -> PrometheusServer:
        """A Prometheus with the shipped alert rules; ``scrape_daemon()`` adds targets."""
        self.prometheus = PrometheusServer(os.path.join(self.work, "prometheus"),
                                           interval=interval).start()
        return self.prometheus

    def base(self, role: str = "controller", host: str | None = None) -> dict:
        """The sections every daemon shares; ``[coordination]`` with ``role``'s
        credentials (TLS, authentication and ACLs on, as in production)."""
        return {"coordination": self.zk.section(role, host, session_timeout=2.0),
                "telemetry": {"controller_port": 0, "agent_port": 0}}

    def bus_sections(self) -> dict:
        return {"DEFAULT": {"transport_url": self.cloud.endpoints["transport_url"]},
                "oslo_messaging_notifications": {"driver": "messagingv2"}}

    def agent(self, host: str, tag: str = "") -> daemons.Daemon:
        """The host's agent, watching its nova-compute."""
        n = host[len("compute"):]
        name = f"agent-{host}" + (f"-{tag}" if tag else "")
        self.zk.provision("/instanceha", [host])  # as the leader does for its inventory
        d = daemons.Daemon.instanceha(
            "instanceha-agent", self.work, name,
            dict(self.base("agent", host), DEFAULT={"host": host}, agent={
                "watched_processes": f"nova-compute:nova-compute{n}.conf",
                "health_check_interval": 0.5,
                "session_file": os.path.join(self.work, f"{name}.session")})).start()
        self.started.append(d)
        return d

    def controller(self, name: str, extra: dict | None = None) -> daemons.Daemon:
        """A controller fencing through the BMCs, recovering through the cloud's
        Nova, notifying on its bus; ``extra``: more options per group."""
        bus = self.bus_sections()
        sections = dict(self.base(), **bus)
        sections.update(
            DEFAULT=dict(bus["DEFAULT"], host=name),
            fencing={"inventory_file": self.inventory, "deadline": 20, "poll_interval": 0.2},
            nova=dict(self.cloud.nova_options(), timeout=30))
        for group, values in (extra or {}).items():
            sections[group] = dict(sections.get(group, {}), **values)
        d = daemons.Daemon.instanceha("instanceha-controller", self.work, name,
                                      sections).start()
        self.started.append(d)
        return d

    def listen(self) -> BusRecorder:
        conf = daemons.write_conf(os.path.join(self.work, "listen.conf"), self.bus_sections())
        self.listener = subprocess.Popen(
            [os.path.join(BIN, "instanceha"), "--config-file", conf, "listen", "--format",
             "json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.bus = BusRecorder(self.listener)
        return self.bus

    def boot(self, names, host: str, metadata=None) -> list[str]:
        """Boot servers on ``host`` and wait for them ACTIVE; their ids."""
        ep = self.cloud.endpoints
        image = self.conn.image.find_image(ep["image"])
        flavor = self.conn.compute.find_flavor(ep["flavor"])
        ids = []
        for name in names:
            meta = metadata(name) if callable(metadata) else (metadata or {})
            s = self.conn.compute.create_server(
                name=name, image_id=image.id, flavor_id=flavor.id, networks="none",
                metadata=meta, availability_zone=f"nova:{host}")
            ids.append(s.id)
            self.servers.append(s.id)
        for sid in ids:
            server = self.conn.compute.get_server(sid)
            try:
                self.conn.compute.wait_for_server(server, status="ACTIVE", wait=300)
            except Exception as e:
                fault = (self.conn.compute.get_server(sid).fault or {}).get("message")
                raise RuntimeError(f"server {sid} ({server.name}) on {host} did not become "
                                   f"ACTIVE: {e}; Nova's fault: {fault!r}") from e
        return ids

    def delete(self, ids, wait: bool = True) -> None:
        for sid in ids:
            try:
                self.conn.compute.delete_server(sid)
            except Exception:  # noqa: S110 - already gone
                pass
        for sid in ids:
            if sid in self.servers:
                self.servers.remove(sid)
        if wait:
            for sid in ids:
                try:
                    self.conn.compute.wait_for_delete(self.conn.compute.get_server(sid),
                                                      wait=120)
                except Exception:  # noqa: S110 - gone
                    pass

    # -- tear-down ---------------------------------------------------------------
    def close(self) -> None:
        """Everything this stack started, in reverse order; never raises."""
        self.say("tearing down")
        steps = [("servers", lambda: self.delete(list(self.servers), wait=False)
                  if self.cloud is not None and self.servers else None),
                 ("listener", self._stop_listener),
                 ("prometheus", lambda: self.prometheus.stop() if self.prometheus else None),
                 ("daemons", lambda: [d.terminate() for d in self.started]),
                 ("bmcs", lambda: [b.stop() for b in self.bmcs.values()]),
                 ("cloud", lambda: self.cloud.down(wipe=True) if self.cloud else None),
                 ("zookeeper", lambda: self.zk.stop() if self.zk else None)]
        for what, step in steps:
            try:
                step()
            except Exception as e:  # tearing down: say it, go on with the rest
                self.say(f"tear-down of the {what} failed: {type(e).__name__}: {e}")
        if self.keep:
            self.say(f"logs kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def _stop_listener(self) -> None:
        if self.listener is not None:
            self.listener.kill()
            self.listener.wait()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def seconds(a: datetime.datetime, b: datetime.datetime) -> float:
    return (b - a).total_seconds()


# -- figures measured from the outside: Nova's own log, the BMC, Nova's API --------

ACTION = re.compile(r'"POST /v2\.1/servers/([0-9a-f-]{36})/action" status: 20[02]')


REQUEST_TIME = re.compile(r" time: ([0-9.]+)")


def nova_accepted(cloud: MiniCloud, server_ids, since: datetime.datetime,
                  arrived: bool = False) -> dict[str, list[datetime.datetime]]:
    """When nova-api accepted (200/202) an action POST for each server, after ``since``,
    from nova-api's own request log (``arrived``: when the request reached it,
    the line's time less nova-api's own time for it)."""
    wanted = set(server_ids)
    found: dict[str, list[datetime.datetime]] = {}
    for line in cloud.log("nova-api").splitlines():
        m, a = STAMP.match(line), ACTION.search(line)
        if m and a and a.group(1) in wanted:
            at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
            took = REQUEST_TIME.search(line)
            if arrived and took:
                at -= datetime.timedelta(seconds=float(took.group(1)))
            if at >= since:
                found.setdefault(a.group(1), []).append(at)
    return found


def bmc_off_at(bmc: IpmiSimBMC, since: datetime.datetime) -> datetime.datetime | None:
    """When the BMC's power bit really went off after ``since`` (its own record)."""
    try:
        with open(bmc.state_file + ".changes") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return None
    for line in lines:
        bit, _, at = line.partition(" ")
        if bit == "0" and at:
            when = datetime.datetime.fromtimestamp(float(at))
            if when >= since:
                return when
    return None


class ActiveWatch:
    """Polls Nova (every ``interval`` s, in a thread) until every server is ACTIVE,
    idle and on another host than ``victim``; ``done_at`` is when that was seen.

    One list request (the caller's project) every 0.5 s, not one GET per
    server every 0.2 s: the mini-cloud's nova-api has one worker, and 20 GETs
    per round (about 1.4 s of its time) kept it busy for the whole measured
    window, so the watcher itself delayed the evacuate requests it was timing
    (the first one took 0.85 s to be accepted behind them, 2026-12-06). The
    price: "all ACTIVE" is seen up to 0.5 s (plus one list) late."""

    def __init__(self, conn, server_ids, victim: str, interval: float = 0.5) -> None:
        self.conn, self.ids, self.victim, self.interval = conn, list(server_ids), victim, interval
        self.done_at: datetime.datetime | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ActiveWatch:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listed = {s.id: s for s in self.conn.compute.servers(details=True)}
            except Exception as e:  # a read failed: try again
                self.error = f"{type(e).__name__}: {e}"
            else:
                servers = [listed.get(sid) for sid in self.ids]
                if all(s is not None and s.status == "ACTIVE" and s.compute_host != self.victim
                       and not s.task_state for s in servers):
                    self.done_at = datetime.datetime.now()
                    return
            self._stop.wait(self.interval)

    def wait(self, timeout: float) -> datetime.datetime:
        self.thread.join(timeout)
        if self.done_at is None:
            self._stop.set()
            raise TimeoutError(f"not all of {len(self.ids)} servers ACTIVE off {self.victim} "
                               f"within {timeout:.0f} s (last error: {self.error})")
        return self.done_at
