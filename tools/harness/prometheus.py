"""A real Prometheus (Debian package ``prometheus``) started by hand on loopback,
and ``promtool``.

    prom = PrometheusServer(workdir).start()   # its own config, data dir, free port
    prom.scrape_daemon(controller)             # the URL its log names ("telemetry on ...")
    prom.wait_alert("InstanceHAHostFailed", host="compute1")
    prom.query('max by (host) (instanceha_host_phase{phase="FAILED"})')
    prom.stop()

Short intervals (scrape and rule evaluation every ``interval`` s, 1 s by
default) so a test sees an alert seconds after the state it is about. The
shipped rules (``etc/prometheus/instanceha-alerts.yaml``) are loaded unless
told otherwise. Targets are file-based service discovery (one JSON file per
job, rewritten atomically), so daemons started later are added while
Prometheus runs: jobs ``instanceha-controller`` and ``instanceha-agent``, the
``instance`` label is the daemon's name.

    python tools/harness/prometheus.py run DIR [--target JOB=NAME=HOST:PORT ...]

runs one in the foreground (Ctrl-C stops it) for a look by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import procs  # noqa: E402

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(TOP, "etc", "prometheus", "instanceha-alerts.yaml")
DASHBOARD = os.path.join(TOP, "etc", "grafana", "instanceha-dashboard.json")
JOBS = ("instanceha-controller", "instanceha-agent")
TELEMETRY = re.compile(r"telemetry on http://([^/\s]+)/metrics")
MISSING = ("is not installed: run tools/install.sh (it installs Debian's 'prometheus' "
           "package, which ships promtool)")


def binary(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{name} {MISSING}")
    return path


# -- promtool ---------------------------------------------------------------------------

def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``promtool ARGS``: its exit status and output (never raises on a failed check)."""
    return subprocess.run([binary("promtool"), *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


def check_rules(*paths: str) -> subprocess.CompletedProcess:
    return promtool("check", "rules", *paths)


def run_rule_tests(*paths: str) -> subprocess.CompletedProcess:
    """``promtool test rules`` (unit tests of alerting rules, with input series)."""
    return promtool("test", "rules", *paths)


def check_metrics(exposition: str) -> subprocess.CompletedProcess:
    """``promtool check metrics`` on a /metrics body: status 0 and no output when it
    is valid and lint-free; each problem is a line of output otherwise."""
    return promtool("check", "metrics", stdin=exposition)


# -- the server ---------------------------------------------------------------------------

class PrometheusError(RuntimeError):
    pass


class PrometheusServer:
    def __init__(self, base_dir: str, rule_files: tuple[str, ...] = (RULES,),
                 interval: float = 1.0, port: int | None = None) -> None:
        self.base_dir = os.path.abspath(base_dir)
        self.rule_files = tuple(os.path.abspath(p) for p in rule_files)
        self.interval = interval
        self.port = port or procs.free_port()
        self.data_dir = os.path.join(self.base_dir, "data")
        self.config = os.path.join(self.base_dir, "prometheus.yml")
        self.log = os.path.join(self.base_dir, "prometheus.log")
        self.targets: dict[str, dict[str, str]] = {job: {} for job in JOBS}  # name -> address
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _sd_file(self, job: str) -> str:
        return os.path.join(self.base_dir, f"targets-{job}.json")

    def _write_targets(self, job: str) -> None:
        groups = [{"targets": [address], "labels": {"instance": name}}
                  for name, address in sorted(self.targets[job].items())]
        tmp = self._sd_file(job) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(groups, f)
        os.replace(tmp, self._sd_file(job))  # read whole or not at all

    def _write_config(self) -> None:
        every = f"{int(self.interval * 1000)}ms"
        config = {
            "global": {"scrape_interval": every, "scrape_timeout": every,
                       "evaluation_interval": every},
            "rule_files": list(self.rule_files),
            "scrape_configs": [
                {"job_name": job,
                 "file_sd_configs": [{"files": [self._sd_file(job)],
                                      "refresh_interval": "1s"}]}
                for job in JOBS],
        }
        with open(self.config, "w") as f:
            yaml.safe_dump(config, f)

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        exe = binary("prometheus")
        os.makedirs(self.data_dir, exist_ok=True)
        for job in JOBS:
            self._write_targets(job)
        self._write_config()
        checked = promtool("check", "config", self.config)
        if checked.returncode != 0:
            raise PrometheusError(f"promtool check config {self.config} failed: "
                                  f"{checked.stdout}{checked.stderr}")
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [exe, f"--config.file={self.config}", f"--storage.tsdb.path={self.data_dir}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d",
             "--web.enable-lifecycle"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()

        def ready():
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.proc.returncode}; "
                                      f"its log ({self.log}): {self.read_log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, OSError):
                return False

        procs.wait_for(ready, timeout, f"prometheus to be ready on {self.url}", interval=0.2)
        return self

    def read_log(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc, 30)
            self.proc = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- targets ---------------------------------------------------------------------
    def scrape(self, job: str, name: str, address: str) -> None:
        """Scrape ``address`` (host:port, path /metrics) as ``instance=name`` of ``job``."""
        if job not in self.targets:
            raise ValueError(f"unknown job {job!r}: one of {', '.join(JOBS)}")
        self.targets[job][name] = address
        self._write_targets(job)

    def scrape_daemon(self, daemon, job: str | None = None, timeout: float = 60.0,
                      after: int = 0) -> str:
        """Scrape a harness ``Daemon`` (agent or controller) at the address its log
        names (after log offset ``after``: a restarted daemon); its job follows from its
        program unless given. Returns the address."""
        if job is None:
            agent = any("agent" in os.path.basename(a) for a in daemon.argv[:-2])
            job = "instanceha-agent" if agent else "instanceha-controller"
        m = daemon.wait_log(TELEMETRY.pattern, timeout=timeout, after=after)
        self.scrape(job, daemon.name, m.group(1))
        return m.group(1)

    def forget(self, job: str, name: str) -> None:
        self.targets[job].pop(name, None)
        self._write_targets(job)

    # -- the HTTP API ----------------------------------------------------------------
    def api(self, path: str, **params) -> object:
        """GET /api/v1/PATH; its ``data``, or PrometheusError with Prometheus' own error."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: "
                                  f"{body.get('error')}") from e
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query: the series of its vector result ([] when none)."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} is a {data['resultType']}, not a vector")
        return data["result"]

    def alerts(self) -> list[dict]:
        """The alerts pending or firing now (``labels``, ``state``, ``activeAt``...)."""
        return self.api("alerts")["alerts"]

    def rules(self) -> list[dict]:
        """Every alerting rule with its ``health`` and ``lastError``."""
        return [r for g in self.api("rules", type="alert")["groups"] for r in g["rules"]]

    def active_targets(self) -> list[dict]:
        return self.api("targets", state="active")["activeTargets"]

    def wait_up(self, names, timeout: float = 60.0) -> None:
        """Until the targets named (their ``instance``) were scraped and are up."""
        names = set(names)

        def up():
            seen = {t["labels"].get("instance"): t["health"] for t in self.active_targets()}
            return all(seen.get(n) == "up" for n in names)

        procs.wait_for(up, timeout, f"prometheus to scrape {sorted(names)}", interval=0.2)

    def _matching(self, name: str, labels: dict, states=("pending", "firing")) -> list[dict]:
        return [a for a in self.alerts()
                if a["labels"].get("alertname") == name and a["state"] in states
                and all(a["labels"].get(k) == v for k, v in labels.items())]

    def wait_alert(self, name: str, state: str = "firing", timeout: float = 120.0,
                   **labels) -> dict:
        """Until Prometheus reports alert ``name`` in ``state`` (with those labels)."""
        found = procs.wait_for(lambda: self._matching(name, labels, (state,)), timeout,
                               f"alert {name} {labels} to be {state} in prometheus",
                               interval=0.2)
        return found[0]

    def wait_resolved(self, name: str, timeout: float = 120.0, **labels) -> None:
        """Until alert ``name`` (with those labels) is neither pending nor firing."""
        procs.wait_for(lambda: not self._matching(name, labels), timeout,
                       f"alert {name} {labels} to resolve in prometheus", interval=0.2)

    def wait_evaluated(self, after: float | None = None, timeout: float = 60.0) -> None:
        """Until every rule group was evaluated after wall time ``after`` (now by
        default): the alerts then reflect the samples scraped before it."""
        after = time.time() if after is None else after

        def evaluated():
            groups = self.api("rules", type="alert")["groups"]
            return groups and all(_epoch(g["lastEvaluation"]) > after for g in groups)

        procs.wait_for(evaluated, timeout, "prometheus to evaluate its rules", interval=0.2)

    def firing(self) -> list[dict]:
        return [a for a in self.alerts() if a["state"] == "firing"]


def _epoch(rfc3339: str) -> float:
    """Prometheus' RFC 3339 times (nanoseconds, Z) as epoch seconds."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$",
                 rfc3339)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {rfc3339!r}")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    at = datetime.datetime.fromisoformat(m.group(1) + zone)
    return at.timestamp() + float("0." + (m.group(2) or "0"))


def describe(alert: dict) -> str:
    """``InstanceHAHostFailed host=compute1`` (the labels that say what it is about)."""
    labels = {k: v for k, v in alert["labels"].items()
              if k not in ("alertname", "severity", "job")}
    return " ".join([alert["labels"]["alertname"]] + [f"{k}={v}" for k, v in
                                                      sorted(labels.items())])


class AlertWatch:
    """Polls Prometheus' alerts API in a thread and records when each alert was first
    seen pending, firing, and gone again: ``events`` of (wall datetime, text)."""

    def __init__(self, prom: PrometheusServer, interval: float = 0.25) -> None:
        self.prom, self.interval = prom, interval
        self.events: list[tuple[datetime.datetime, str]] = []
        self.error: str | None = None
        self._state: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-watch", daemon=True)

    def start(self) -> AlertWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = {describe(a): a["state"] for a in self.prom.alerts()}
            except (OSError, PrometheusError, ValueError) as e:
                self.error = f"{type(e).__name__}: {e}"
            else:
                at = datetime.datetime.now()
                for what, state in sorted(now.items()):
                    if self._state.get(what) != state:
                        self.events.append((at, f"alert {what} {state}"))
                for what in sorted(set(self._state) - set(now)):
                    self.events.append((at, f"alert {what} resolved"))
                self._state = now
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# -- the Grafana dashboard ----------------------------------------------------------------

GRAFANA_VARIABLES = {
    # Grafana's own: a rate window of several scrapes, the dashboard's time range
    "$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h",
}


def dashboard_queries(path: str = DASHBOARD, variables: dict | None = None
                      ) -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL) of every target of every panel (rows included),
    with Grafana's variables and the dashboard's own (``$host``: every host)
    substituted. A variable left over raises ValueError naming the panel."""
    with open(path) as f:
        dash = json.load(f)
    subst = dict(GRAFANA_VARIABLES)
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            subst[f"${var['name']}"] = var.get("allValue") or ".*"
    subst.update(variables or {})
    out = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                expr = t["expr"]
                for name in sorted(subst, key=len, reverse=True):
                    expr = expr.replace(name, subst[name])
                    expr = expr.replace("${" + name[1:] + "}", subst[name])
                if "$" in expr:
                    raise ValueError(f"panel {p.get('title')!r} {t.get('refId')}: a variable "
                                     f"the test does not know in {expr!r}")
                out.append((p.get("title", ""), t.get("refId", ""), expr))

    walk(dash.get("panels", []))
    return out


def finite(series: list[dict]) -> list[dict]:
    """The series of an instant query whose value is a number (not NaN, not Inf)."""
    return [s for s in series if math.isfinite(float(s["value"][1]))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("dir")
    run.add_argument("--port", type=int)
    run.add_argument("--target", action="append", default=[], metavar="JOB=NAME=HOST:PORT")
    args = p.parse_args(argv)
    prom = PrometheusServer(args.dir, port=args.port).start()
    for t in args.target:
        job, name, address = t.split("=", 2)
        prom.scrape(job, name, address)
    print(f"prometheus on {prom.url} (log {prom.log}); Ctrl-C stops it", flush=True)
    try:
        while prom.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        prom.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
