"""A cluster's certificate authority and per-process certificates (`cluster up --tls`).

Everything lives in `<cluster dir>/tls/` (mode 0700): `ca.pem` and `ca.key`, then `NAME.pem` and
`NAME.key` for each process (`meta`, `meta-1`, `storage-0`, ..., and `client` for the clients of
this machine's user). Keys are written mode 0600. The CA key stays so a restarted or added node
gets a certificate without a new CA. Every certificate names its hosts (loopback and the host the
process binds) as subject alternative names, and may serve and connect (server and client auth):
a storage node is a client of the metaserver and of its successor in a chain.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chainfs.common import tls, tls_profiles
from chainfs.common.tls import CA_FILE, CLIENT_NAME, TlsConfig

CA_KEY = "ca.key"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
VALID_DAYS = 365


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h.strip("[]") for h in hosts if h):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


class CertAuthority:
    """The CA of one cluster directory: made on first use, loaded after."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if not (self.dir / CA_KEY).exists():
            self._make()
        self._key = serialization.load_pem_private_key((self.dir / CA_KEY).read_bytes(), None)
        self._cert = x509.load_pem_x509_certificate((self.dir / CA_FILE).read_bytes())

    def _make(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"chainfs CA {self.dir.parent.name}")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=10 * VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        _write(self.dir / CA_KEY, _key_pem(key), 0o600)
        _write(self.dir / CA_FILE, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def issue(self, name: str, hosts: Iterable[str] = ()) -> None:
        """Writes NAME.pem and NAME.key, valid for loopback and `hosts`; replaces older ones."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"chainfs {name}")]))
                .issuer_name(self._cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(_san([*LOOPBACK, *hosts]), critical=False)
                .sign(self._key, hashes.SHA256()))
        _write(self.dir / f"{name}.key", _key_pem(key), 0o600)
        _write(self.dir / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def ensure(self, name: str, hosts: Iterable[str] = ()) -> None:
        """Issues NAME's certificate unless it exists (a restart keeps its certificate)."""
        if not (self.dir / f"{name}.pem").exists() or not (self.dir / f"{name}.key").exists():
            self.issue(name, hosts)


# ---- a LocalCluster's use of them ----

TLS_DIR = "tls"


def server_args(root: Path, name: str, host: str) -> list[str]:
    """The flags that start server NAME with its certificate (issued for `host` if missing)."""
    ca = CertAuthority(root / TLS_DIR)
    ca.ensure(name, [host])
    return ["--tls-dir", str(ca.dir), "--tls-name", name]


def publish(root: Path, addresses: list[str]) -> None:
    """Makes the cluster's client certificate the TLS of its metaservers: in this process, and for
    every process of this user (the per-user profiles)."""
    ca = CertAuthority(root / TLS_DIR)
    ca.ensure(CLIENT_NAME)
    tls.register(addresses, TlsConfig.from_dir(ca.dir))
    tls_profiles.save(addresses, ca.dir)


def withdraw(root: Path, addresses: list[str]) -> None:
    tls.forget(addresses)
    tls_profiles.remove(addresses, root / TLS_DIR)
