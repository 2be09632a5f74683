"""A small HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``.

``/healthz`` answers 200 while the daemon's main loop has run recently
(a hung loop turns it 503); ``/readyz`` answers 200 while the daemon is
ready (connected to the coordinator; the agent also joined). Loopback by
default: metrics name hosts, never secrets.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Check = Callable[[], tuple[bool, str]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body = generate_latest(self.server.registry)
            self._reply(200, body, CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            ok, why = (self.server.healthy if path == "/healthz" else self.server.ready)()
            self._reply(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
        else:
            self._reply(404, b"not found\n", "text/plain; charset=utf-8")

    def _reply(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args) -> None:  # scrapes are not worth a log line
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    healthy: Check
    ready: Check


class TelemetryServer:
    def __init__(self, registry: CollectorRegistry, healthy: Check, ready: Check,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.registry = registry
        self._server.healthy = healthy
        self._server.ready = ready
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="telemetry-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> TelemetryServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
