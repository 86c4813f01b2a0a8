"""Parsing `chainfs://HOST:PORT/path` URLs (`chainfs://H1:P1,H2:P2/path` for several metaservers;
`chainfs:///path` takes them from $CHAINFS_ADDRESS)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from chainfs.common.paths import checked_path

SCHEME = "chainfs"
ADDRESS_ENV = "CHAINFS_ADDRESS"  # default cluster for `chainfs:///path` and options without a host


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
    if text.startswith(f"{SCHEME}:///"):
        address = os.environ.get(ADDRESS_ENV, "")
        if not address:
            raise ValueError(f"{text!r} names no cluster: give chainfs://HOST:PORT/path or set ${ADDRESS_ENV}=HOST:PORT")
        text = f"{SCHEME}://{address}{text[len(SCHEME) + 3:]}"
    # Everything after the hosts is the path: `?` and `#` are file-name (and glob) characters here.
    netloc, slash, rest = text[len(SCHEME) + 3:].partition("/")
    hosts = [_host_port(f"{SCHEME}://{item}", text) for item in netloc.split(",")]
    path = checked_path(slash + rest or "/")
    (host, port), others = hosts[0], hosts[1:]
    return ChainfsURL(host=host, port=port, path=path, others=tuple(f"{h}:{p}" for h, p in others))


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
