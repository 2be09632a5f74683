"""Misbehaving BMCs on loopback, run in a thread of the test process.

* ``GarbageUDP``: answers every datagram on its UDP port with bytes that are not
  RMCP/IPMI (an IPMI client sees a reply, but not a BMC).
* ``QuirkyRedfish`` over HTTPS with basic auth:
  ``mode="garbage"``: every request gets ``200 OK`` with a body that is not JSON;
  ``mode="conflict"``: a one-system Redfish service that, like several vendors'
  BMCs, answers ``409 Conflict`` to a Reset that asks for the state the system
  is already in (ForceOff of a powered-off system). ``stale_reads=N`` makes
  the first N reads of the system say "On" whatever the power is: the race
  where the host went off between a fencer's read and its request.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import socketserver
import ssl
import threading

from harness import procs
from harness.bmc import tls


class GarbageUDP:
    def __init__(self, reply: bytes = b"\xde\xad\xbe\xef this is not a BMC") -> None:
        self.reply = reply
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> GarbageUDP:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                _, peer = self.sock.recvfrom(4096)
                self.received += 1
                self.sock.sendto(self.reply, peer)
            except OSError:
                return

    def stop(self) -> None:
        self.sock.close()
        self._thread.join(2)

    def entry(self, **extra) -> dict:
        return {"driver": "ipmi", "address": "127.0.0.1", "port": self.port,
                "username": "admin", "password": "password", **extra}


SYSTEM_ID = "quirky1"


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "QuirkyBMC/1.0"

    def log_message(self, fmt, *args):  # keep pytest output clean
        self.server.requests.append(f"{self.command} {self.path}")

    def _send(self, code: int, body, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        want = base64.b64encode(f"{self.server.user}:{self.server.password}".encode()).decode()
        if self.headers.get("Authorization") == f"Basic {want}":
            return True
        self._send(401, {"error": {"code": "Base.1.0.NoValidSession",
                                   "message": "authentication required"}})
        return False

    def do_GET(self):
        if self.server.mode == "garbage":
            return self._send(200, b"<html>\x00\x01 not redfish {{{", "text/html")
        path = self.path.rstrip("/")
        if path == "/redfish/v1":
            return self._send(200, {"@odata.id": "/redfish/v1", "Id": "RootService",
                                    "Name": "Root", "RedfishVersion": "1.6.0",
                                    "UUID": "00000000-0000-0000-0000-0000000000aa",
                                    "Systems": {"@odata.id": "/redfish/v1/Systems"}})
        if not self._authorized():
            return
        if path == "/redfish/v1/Systems":
            return self._send(200, {"@odata.id": path, "Name": "Systems",
                                    "Members@odata.count": 1,
                                    "Members": [{"@odata.id": f"{path}/{SYSTEM_ID}"}]})
        if path == f"/redfish/v1/Systems/{SYSTEM_ID}":
            return self._send(200, {
                "@odata.id": path, "Id": SYSTEM_ID, "Name": SYSTEM_ID,
                "PowerState": self._read_power(),
                "Actions": {"#ComputerSystem.Reset": {
                    "target": f"{path}/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": ["On", "ForceOff"]}}})
        self._send(404, {"error": {"code": "Base.1.0.ResourceMissingAtURI", "message": path}})

    def _read_power(self) -> str:
        if self.server.stale_reads > 0:
            self.server.stale_reads -= 1
            return "On"
        return self.server.power

    def do_POST(self):
        if self.server.mode == "garbage":
            return self._send(200, b"\x00\x01 garbage", "text/html")
        if not self._authorized():
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        want = {"ForceOff": "Off", "On": "On"}.get(body.get("ResetType"))
        if want is None:
            return self._send(400, {"error": {"code": "Base.1.0.ActionParameterUnknown",
                                              "message": "bad ResetType"}})
        if want == self.server.power:
            self.server.conflicts += 1
            return self._send(409, {"error": {
                "code": "Base.1.0.GeneralError",
                "message": f"the system is already {want}",
                "@Message.ExtendedInfo": [{"MessageId": "Base.1.0.PropertyValueConflict",
                                           "Message": f"the system is already {want}",
                                           "Severity": "Warning"}]}})
        self.server.power = want
        self._send(204, b"")


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class QuirkyRedfish:
    kind = "quirky-redfish"

    def __init__(self, base_dir: str, mode: str, power: str = "Off", user: str = "admin",
                 password: str = "password", stale_reads: int = 0) -> None:
        assert mode in ("garbage", "conflict")
        self.dir = os.path.join(os.path.abspath(base_dir), f"quirky-{mode}")
        os.makedirs(self.dir, exist_ok=True)
        self.cert, key = tls.self_signed(self.dir, "quirky")
        self.port = procs.free_port()
        self.httpd = _Server(("127.0.0.1", self.port), _Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.mode, self.httpd.power = mode, power
        self.httpd.user, self.httpd.password = user, password
        self.httpd.conflicts = 0
        self.httpd.stale_reads = stale_reads
        self.httpd.requests = []
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def power(self) -> str:
        return self.httpd.power

    @property
    def conflicts(self) -> int:
        return self.httpd.conflicts

    def start(self) -> QuirkyRedfish:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(2)

    def entry(self, **extra) -> dict:
        return {"driver": "redfish", "address": "127.0.0.1", "port": self.port,
                "username": self.httpd.user, "password": self.httpd.password,
                "verify": self.cert, "system_id": SYSTEM_ID, **extra}
