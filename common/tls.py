"""Mutual TLS for every gRPC channel and data connection (docs/security.md, "TLS").

A `TlsConfig` is three PEM files: the cluster's CA, and this process's certificate and key. Servers
present their certificate and demand one signed by the same CA from every peer (mutual TLS);
clients verify the server's certificate, host name or IP included, against the CA.

Which config an outgoing connection uses is decided per address, so one process can talk to a
TLS cluster and a plaintext one at once: addresses registered with `register` (a client registers
its metaservers and, as it learns the routing table, their storage nodes), else the process's own
config (`set_process`, what a server process runs with), else plaintext. A client finds its config
as it finds credentials (`resolve`): an explicit argument, then `$CHAINFS_TLS_DIR`, then the
per-user file (`chainfs.common.tls_profiles`) keyed by metaserver address.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

import grpc

from chainfs.common.addresses import PerAddress

if TYPE_CHECKING:
    import argparse

ENV_DIR = "CHAINFS_TLS_DIR"
CA_FILE = "ca.pem"
CLIENT_NAME = "client"  # the certificate a client directory holds: client.pem, client.key


@dataclass(frozen=True)
class TlsConfig:
    """The PEM bytes of one identity: the CA every peer must chain to, a certificate and its key."""

    ca: bytes
    cert: bytes
    key: bytes = field(repr=False)
    source: str = ""  # where it was loaded from (for messages)

    @classmethod
    def load(cls, ca: str | os.PathLike[str], cert: str | os.PathLike[str],
             key: str | os.PathLike[str]) -> "TlsConfig":
        try:
            return cls(Path(ca).read_bytes(), Path(cert).read_bytes(), Path(key).read_bytes(), str(Path(cert).parent))
        except OSError as exc:
            raise FileNotFoundError(exc.errno, f"TLS material missing: {exc.strerror}", exc.filename) from None

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str], name: str = CLIENT_NAME) -> "TlsConfig":
        """`DIR/ca.pem`, `DIR/NAME.pem`, `DIR/NAME.key` (what `cluster up --tls` writes)."""
        d = Path(directory)
        return cls.load(d / CA_FILE, d / f"{name}.pem", d / f"{name}.key")

    # ---- gRPC ----

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)

    # ---- the data path (ssl module) ----

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._load(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED  # mutual: a client without a CA-signed certificate is refused
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
        self._load(ctx)
        return ctx

    def _load(self, ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cadata=self.ca.decode("ascii"))
        # ssl wants files for the identity: a private temp file, removed at once after loading.
        import tempfile

        with tempfile.TemporaryDirectory(prefix="chainfs-tls-") as tmp:
            cert, key = Path(tmp) / "c.pem", Path(tmp) / "c.key"
            cert.write_bytes(self.cert)
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.key)
            ctx.load_cert_chain(cert, key)


TlsArg = Union[TlsConfig, str, os.PathLike, bool, None]

_lock = threading.Lock()
_CONFIGS: PerAddress[TlsConfig] = PerAddress()  # the default is the process's own config
_contexts: dict[tuple[TlsConfig, bool], ssl.SSLContext] = {}


# This process's own identity (servers use it for their ports and every outgoing connection); the
# addresses with a config of their own (None: plaintext), whatever the process's; the config of a
# connection to an address (looked up on every call, ChannelPool.get, without a lock).
set_process = _CONFIGS.set_default
register = _CONFIGS.register
forget = _CONFIGS.forget
for_address = _CONFIGS.get


def resolve(address: str, explicit: TlsArg = None) -> TlsConfig | None:
    """A client's TLS config for the cluster at `address` ("h:p" or "h1:p1,h2:p2"), looked for as
    credentials are: the explicit argument (a TlsConfig, a directory, or False for plaintext), then
    `$CHAINFS_TLS_DIR`, then the per-user profile of one of its metaservers, then whatever this
    process already registered for it (a LocalCluster started here), then the process's own."""
    if isinstance(explicit, TlsConfig):
        return explicit
    if explicit is False:
        return None
    if explicit is not None and explicit is not True:
        return TlsConfig.from_dir(explicit)
    env = os.environ.get(ENV_DIR)
    if env:
        return TlsConfig.from_dir(env)
    from chainfs.common import tls_profiles

    addresses = [a.strip() for a in address.split(",") if a.strip()]
    for a in addresses:
        found = tls_profiles.lookup(a)
        if found is not None:
            return found
    found = _CONFIGS.first_registered(addresses)  # else a server process's clients speak as the process
    if found is not None:
        return found
    if explicit is True:
        raise FileNotFoundError(2, f"tls=True but no TLS material found for {address} "
                                   f"(pass a directory, set ${ENV_DIR}, or start the cluster with --tls)")
    return None


# ---- connections ----

def secure_or_insecure_channel(address: str, options: list) -> tuple[grpc.Channel, TlsConfig | None]:
    """The channel to `address` under the TLS config that address is registered with."""
    cfg = for_address(address)
    if cfg is None:
        return grpc.insecure_channel(address, options=options), None
    return grpc.secure_channel(address, cfg.channel_credentials(), options=options), cfg


def add_port(server: grpc.Server, address: str) -> int:
    cfg = _CONFIGS.default
    if cfg is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, cfg.server_credentials())


def _context(cfg: TlsConfig, server_side: bool) -> ssl.SSLContext:
    key = (cfg, server_side)
    with _lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = cfg.server_context() if server_side else cfg.client_context()
            _contexts[key] = ctx
        return ctx


def wrap_client(sock: socket.socket, address: str, host: str, timeout: float) -> socket.socket:
    """The data connection `sock` to `address` under TLS, handshake done, if the address uses it."""
    cfg = for_address(address)
    if cfg is None:
        return sock
    sock.settimeout(timeout)
    return _context(cfg, server_side=False).wrap_socket(sock, server_hostname=host.strip("[]"))


def server_wrapper() -> "ssl.SSLContext | None":
    """The context a data server wraps accepted connections with (None: plaintext)."""
    cfg = _CONFIGS.default
    return None if cfg is None else _context(cfg, server_side=True)


# ---- server processes ----

def add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-dir", default=None,
                        help="serve and connect with mutual TLS: DIR/ca.pem and this process's "
                             "DIR/NAME.pem, DIR/NAME.key (what `cluster up --tls` makes)")
    parser.add_argument("--tls-name", default=None, help="NAME of this process's certificate in --tls-dir")


def configure_from_args(args: argparse.Namespace) -> None:
    """Sets the process config from --tls-dir/--tls-name; ValueError when only one is given."""
    directory, name = getattr(args, "tls_dir", None), getattr(args, "tls_name", None)
    if bool(directory) != bool(name):
        raise ValueError("--tls-dir and --tls-name go together")
    if directory:
        set_process(TlsConfig.from_dir(directory, name))
