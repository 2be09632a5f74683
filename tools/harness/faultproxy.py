"""A fault-injecting HTTP proxy for an OpenStack API (Nova), run in a thread of
the test process.

    proxy = FaultProxy("http://127.0.0.1:8774").start()
    # point the client at proxy.url + "/v2.1" ([nova] endpoint_override)
    r = proxy.fail("PUT", r"/os-services/", body=r'"forced_down": true', status=500, times=3)
    g = proxy.gate("POST", r"/servers/[^/]+/action$", body=r'"evacuate"', skip=1)
    g.wait_held(60)            # the 2nd evacuate is held here, not yet sent to Nova
    ...                        # kill the client, for example
    g.release(forward=False)   # drop it (Nova never sees it); forward=True sends it on
    proxy.delay("POST", r"/action$", seconds=8, when="after", times=1)   # a timeout
    proxy.requests(method="POST", path=r"/action$", body=r'"evacuate"', forwarded=True)

Rules are matched in the order they were added; the first rule that matches a
request and still has ``times`` left acts on it (``skip`` lets that many
matching requests through first). Every rule counts the requests it matched
(``matched``) and those it acted on (``hits``). Every request is logged with
what happened to it (``Request``), so a test can count, for example, evacuate
calls per server that really reached Nova.

Actions:

* ``fail``: answer ``status`` (a 5xx by default) with a JSON fault body, without
  forwarding;
* ``delay``: wait ``seconds`` before forwarding (``when="before"``: Nova sees the
  request late) or after Nova answered (``when="after"``: Nova has done it, the
  client waits; with a client timeout shorter than the delay, the client times
  out on a request that *was* executed);
* ``gate``: hold the request until the test calls ``release()``; then forward it
  or drop it (the client's connection is closed without an answer).

Only loopback; HTTP/1.1 with keep-alive towards the client, one upstream
connection per request.
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import json
import re
import socketserver
import threading
import time
import urllib.parse

from harness import procs

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "host", "content-length"}


@dataclasses.dataclass
class Request:
    method: str
    path: str
    body: str
    rule: str | None = None
    action: str = "forwarded"  # forwarded, failed, delayed, held, dropped
    status: int | None = None  # what the client got (None: no answer)
    forwarded: bool = False  # Nova saw it
    at: float = 0.0  # when it arrived (monotonic)
    wall: float = 0.0  # the same, epoch seconds


class Rule:
    def __init__(self, kind: str, method: str, path: str, body: str | None, times: int | None,
                 skip: int, **params) -> None:
        self.kind = kind
        self.method = method.upper() if method else None
        self.path = re.compile(path)
        self.body = re.compile(body) if body else None
        self.times = times
        self.skip = skip
        self.params = params
        self.matched = 0
        self.hits = 0
        self.name = f"{kind} {method} {path}" + (f" [{body}]" if body else "")
        # gate
        self._held = threading.Condition()
        self.holding = 0
        self._released: list[bool] = []  # one decision per held request, in order

    def __repr__(self) -> str:
        return f"<Rule {self.name} matched={self.matched} hits={self.hits}>"

    def matches(self, method: str, path: str, body: str) -> bool:
        return ((self.method is None or method == self.method) and bool(self.path.search(path))
                and (self.body is None or bool(self.body.search(body))))

    def take(self) -> bool:
        """Called under the proxy's lock for a matching request: act on it?"""
        self.matched += 1
        if self.matched <= self.skip:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    # -- gate ------------------------------------------------------------------
    def _hold(self) -> bool:
        """Block the request's thread until released; True: forward it."""
        with self._held:
            self.holding += 1
            self._held.notify_all()
            while not self._released:
                self._held.wait()
            self.holding -= 1
            return self._released.pop(0)

    def wait_held(self, timeout: float) -> Rule:
        """Until a request is held by this gate."""
        procs.wait_for(lambda: self.holding > 0, timeout, f"a request held by {self.name}",
                       interval=0.02)
        return self

    def release(self, forward: bool = True) -> None:
        """Let the oldest held request go on (forward) or drop it."""
        with self._held:
            self._released.append(forward)
            self._held.notify_all()


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FaultProxy/1.0"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _any(self):
        self.server.proxy._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any


class FaultProxy:
    def __init__(self, upstream: str, upstream_timeout: float = 120.0) -> None:
        u = urllib.parse.urlsplit(upstream)
        self.upstream_host = u.hostname
        self.upstream_port = u.port or 80
        self.upstream_timeout = upstream_timeout
        self.port = procs.free_port()
        self.rules: list[Rule] = []
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", self.port), _Handler)
        self._httpd.proxy = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="faultproxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        for rule in list(self.rules):  # never leave a handler thread blocked
            if rule.kind == "gate":
                for _ in range(rule.holding):
                    rule.release(forward=False)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    # -- rules -----------------------------------------------------------------
    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def fail(self, method: str, path: str, body: str | None = None, status: int = 500,
             times: int | None = 1, skip: int = 0) -> Rule:
        return self._add(Rule("fail", method, path, body, times, skip, status=status))

    def delay(self, method: str, path: str, seconds: float, body: str | None = None,
              when: str = "before", times: int | None = 1, skip: int = 0) -> Rule:
        assert when in ("before", "after")
        return self._add(Rule("delay", method, path, body, times, skip, seconds=seconds,
                              when=when))

    def gate(self, method: str, path: str, body: str | None = None, times: int | None = 1,
             skip: int = 0) -> Rule:
        return self._add(Rule("gate", method, path, body, times, skip))

    def remove(self, rule: Rule) -> None:
        with self._lock:
            if rule in self.rules:
                self.rules.remove(rule)

    def clear(self) -> None:
        with self._lock:
            rules, self.rules = self.rules, []
        for rule in rules:
            if rule.kind == "gate":
                for _ in range(rule.holding):
                    rule.release(forward=False)

    def requests(self, method: str | None = None, path: str | None = None,
                 body: str | None = None, forwarded: bool | None = None) -> list[Request]:
        """Requests logged so far that match (all when no filter)."""
        rx_path = re.compile(path) if path else None
        rx_body = re.compile(body) if body else None
        with self._lock:
            log = list(self.log)
        return [r for r in log
                if (method is None or r.method == method.upper())
                and (rx_path is None or rx_path.search(r.path))
                and (rx_body is None or rx_body.search(r.body))
                and (forwarded is None or r.forwarded == forwarded)]

    # -- the request path ------------------------------------------------------
    def _handle(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = raw.decode("utf-8", "replace")
        path = urllib.parse.urlsplit(h.path).path
        entry = Request(h.command, h.path, body, at=time.monotonic(), wall=time.time())
        with self._lock:
            self.log.append(entry)
            rule = next((r for r in self.rules if r.matches(h.command, path, body) and r.take()),
                        None)
        if rule is None:
            return self._forward(h, raw, entry)
        entry.rule = rule.name
        if rule.kind == "fail":
            entry.action = "failed"
            status = rule.params["status"]
            return self._answer(h, entry, status, json.dumps({"computeFault": {
                "code": status, "message": f"injected by the fault proxy ({rule.name})"}}
            ).encode())
        if rule.kind == "delay":
            entry.action = "delayed"
            if rule.params["when"] == "before":
                time.sleep(rule.params["seconds"])
                return self._forward(h, raw, entry)
            return self._forward(h, raw, entry, delay_answer=rule.params["seconds"])
        entry.action = "held"
        if rule._hold():
            return self._forward(h, raw, entry)
        entry.action = "dropped"
        h.close_connection = True  # no answer: the client sees the connection close

    def _forward(self, h: _Handler, raw: bytes, entry: Request, delay_answer: float = 0) -> None:
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = f"{self.upstream_host}:{self.upstream_port}"
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port,
                                          timeout=self.upstream_timeout)
        try:
            conn.request(h.command, h.path, body=raw or None, headers=headers)
            entry.forwarded = True
            resp = conn.getresponse()
            data = resp.read()
            status, reason = resp.status, resp.reason
            resp_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        except OSError as e:
            return self._answer(h, entry, 502, json.dumps(
                {"message": f"fault proxy: upstream failed: {e}"}).encode())
        finally:
            conn.close()
        if delay_answer:
            time.sleep(delay_answer)
        self._answer(h, entry, status, data, resp_headers, reason)

    @staticmethod
    def _answer(h: _Handler, entry: Request, status: int, data: bytes,
                headers: list | None = None, reason: str | None = None) -> None:
        try:
            h.send_response(status, reason)
            for k, v in headers or [("Content-Type", "application/json")]:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
            h.wfile.flush()
            entry.status = status
        except OSError:  # the client went away (timed out, or was killed)
            h.close_connection = True
