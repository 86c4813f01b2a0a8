"""Parsing `chainfs://HOST:PORT/path` URLs (`chainfs://H1:P1,H2:P2/path` for several metaservers)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from chainfs.common.paths import checked_path

SCHEME = "chainfs"


@dataclass(frozen=True)
class ChainfsURL:
    host: str  # the first metaserver
    port: int
    path: str  # normalized absolute path
    others: tuple[str, ...] = ()  # further metaservers of the same cluster, HOST:PORT each

    @property
    def address(self) -> str:
        """Every metaserver, comma-separated (what MetaClient and ChainFileSystem take)."""
        return ",".join((f"{self.host}:{self.port}", *self.others))

    def __str__(self) -> str:
        return f"{SCHEME}://{self.address}{self.path}"


def is_chainfs_url(text: str) -> bool:
    return text.startswith(f"{SCHEME}://")


def parse_url(text: str) -> ChainfsURL:
    """Splits a chainfs URL; raises ValueError naming what is wrong."""
    if not is_chainfs_url(text):
        raise ValueError(f"not a chainfs URL (expected chainfs://HOST:PORT/path): {text!r}")
    parts = urlsplit(text)
    if parts.query or parts.fragment:
        raise ValueError(f"chainfs URLs take no query or fragment: {text!r}")
    hosts = [_host_port(f"{SCHEME}://{item}", text) for item in parts.netloc.split(",")]
    path = checked_path(parts.path or "/")
    (host, port), rest = hosts[0], hosts[1:]
    return ChainfsURL(host=host, port=port, path=path, others=tuple(f"{h}:{p}" for h, p in rest))


def _host_port(one: str, text: str) -> tuple[str, int]:
    parts = urlsplit(one)
    host = parts.hostname
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in chainfs URL {text!r}: {exc}") from exc
    if not host or port is None:
        raise ValueError(f"chainfs URL needs HOST:PORT: {text!r}")
    if port == 0:
        raise ValueError(f"port 0 is not a valid port: {text!r}")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return host, port
