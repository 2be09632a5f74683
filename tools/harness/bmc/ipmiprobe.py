"""A raw IPMI-over-LAN probe: one "Get Channel Authentication Capabilities"
datagram, used by the harness to know a BMC emulator is answering."""

from __future__ import annotations

import socket


def _checksum(data: bytes) -> int:
    return (-sum(data)) & 0xFF


def auth_caps_request() -> bytes:
    header = bytes([0x20, 0x18])  # rsAddr BMC, netFn application (0x06 << 2)
    body = bytes([0x81, 0x00, 0x38, 0x8E, 0x04])  # rqAddr, seq, cmd, channel, admin
    msg = header + bytes([_checksum(header)]) + body + bytes([_checksum(body)])
    session = bytes([0x00]) + b"\x00" * 8 + bytes([len(msg)])
    return b"\x06\x00\xff\x07" + session + msg


def answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if an RMCP reply comes back from host:port/udp within timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            s.send(auth_caps_request())
            data = s.recv(512)
        except OSError:
            return False
    return data[:4] == b"\x06\x00\xff\x07"
