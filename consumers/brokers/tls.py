"""Throwaway TLS material for a loopback test broker, made by the ``openssl`` command: an
authority, a server certificate it signed for 127.0.0.1 and localhost, and client certificates
(``CN=<name>``) for brokers that require them. Keys are unencrypted PKCS#8, as Kafka's PEM key
stores read them."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from consumers.brokers.base import LOOPBACK
from consumers.errors import BrokerError


@dataclass(frozen=True)
class Certificates:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def server(self) -> Path:
        """The server's key and certificate in one file (a Kafka PEM key store)."""
        return self.folder / "server.pem"

    def client(self, name: str) -> tuple[Path, Path, Path]:
        """``(certificate, key, both in one file)`` of client ``name``."""
        return (self.folder / f"{name}.crt", self.folder / f"{name}.key", self.folder / f"{name}.pem")


def _openssl(*args: object) -> None:
    res = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise BrokerError(f"making a test certificate failed: openssl {args[0]}: {res.stderr[-300:]}")


def _issue(certs: Certificates, name: str, subject: str, extensions: str, days: int) -> tuple[Path, Path]:
    """A key and a certificate signed by the authority; the two are also written as ``name.pem``."""
    key, csr, crt = (certs.folder / f"{name}.{x}" for x in ("key", "csr", "crt"))
    ext = certs.folder / f"{name}.cnf"
    ext.write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", subject)
    _openssl("x509", "-req", "-in", csr, "-CA", certs.ca, "-CAkey", certs.folder / "ca.key",
             "-CAcreateserial", "-out", crt, "-days", days, "-extfile", ext)  # fmt: skip
    (certs.folder / f"{name}.pem").write_text(key.read_text() + crt.read_text())
    return crt, key


def make_certificates(folder: Path, clients: tuple[str, ...] = (), days: int = 2) -> Certificates:
    """The authority, the server's certificate (which also serves the broker as a client of
    itself) and one client certificate per name in ``clients``."""
    folder.mkdir(parents=True, exist_ok=True)
    certs = Certificates(folder)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", folder / "ca.key", "-out", certs.ca,
             "-days", days, "-subj", "/CN=gopwatch test CA")  # fmt: skip
    san = f"subjectAltName=IP:{LOOPBACK},DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    _issue(certs, "server", f"/CN={LOOPBACK}", san, days)
    for name in clients:
        _issue(certs, name, f"/CN={name}", "extendedKeyUsage=clientAuth\n", days)
    return certs
