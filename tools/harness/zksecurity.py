"""One coordination security domain for a test ZooKeeper: a CA and a server
certificate (TLS on ZooKeeper's secureClientPort), and the controllers' key
every identity's credentials derive from. Made locally at test time, nothing
downloaded.

    sec = ZkSecurity(dir)                  # CA, server cert, key (once per dir)
    sec.credentials("agent", "compute1")   # path of a 0600 credentials file
    sec.section(url, "agent", "compute1")  # the [coordination] options of a daemon
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from instanceha.coordination import credentials as cr
from instanceha.secret import Secret


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: str, data: bytes, mode: int = 0o644) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


class ZkSecurity:
    def __init__(self, directory: str) -> None:
        self.dir = os.path.abspath(directory)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.ca_file = os.path.join(self.dir, "ca.pem")
        self.server_pem = os.path.join(self.dir, "zookeeper-server.pem")
        key_file = os.path.join(self.dir, "key")
        if not os.path.exists(self.ca_file):
            self._make_pki()
        if not os.path.exists(key_file):
            _write(key_file, cr.new_key().encode(), 0o600)
        with open(key_file) as f:
            self.key = Secret(f.read().strip())

    def _make_pki(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = _key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "instanceha test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=7))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .sign(ca_key, hashes.SHA256()))
        server_key = _key()
        server = (x509.CertificateBuilder()
                  .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                              "zookeeper test server")]))
                  .issuer_name(ca_name).public_key(server_key.public_key())
                  .serial_number(x509.random_serial_number())
                  .not_valid_before(now - datetime.timedelta(minutes=5))
                  .not_valid_after(now + datetime.timedelta(days=7))
                  .add_extension(x509.SubjectAlternativeName(
                      [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                       x509.DNSName("localhost")]), critical=False)
                  .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                        ExtendedKeyUsageOID.CLIENT_AUTH]),
                                 critical=False)
                  .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        _write(self.ca_file, ca.public_bytes(pem))
        # ZooKeeper's PEM key store: the private key, then the certificate chain
        _write(self.server_pem, _pem_key(server_key) + server.public_bytes(pem), 0o600)

    def credentials_for(self, role: str, host: str | None = None) -> cr.Credentials:
        if role == cr.CONTROLLER:
            return cr.for_controller((self.key,))
        if role == cr.AGENT:
            return cr.for_agent(self.key, host)
        return cr.for_operator(self.key)

    def credentials(self, role: str, host: str | None = None) -> str:
        """The path of a credentials file (mode 0600) for ``role`` (and ``host``)."""
        name = f"{role}-{host}.yaml" if host else f"{role}.yaml"
        path = os.path.join(self.dir, name)
        if not os.path.exists(path):
            cr.write(path, self.credentials_for(role, host))
        return path

    def section(self, url: str, role: str, host: str | None = None) -> dict:
        """The ``[coordination]`` options of a daemon or the CLI."""
        return {"backend_url": url, "credentials_file": self.credentials(role, host),
                "tls_ca_file": self.ca_file}

    def tls(self):
        from instanceha.coordination.zk_session import TlsSettings

        return TlsSettings(ca_file=self.ca_file)
