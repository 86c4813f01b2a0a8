"""Parsing `chainfs://HOST:PORT/path` URLs."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from chainfs.common.paths import checked_path

SCHEME = "chainfs"


@dataclass(frozen=True)
class ChainfsURL:
    host: str
    port: int
    path: str  # normalized absolute path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{SCHEME}://{self.host}:{self.port}{self.path}"


def is_chainfs_url(text: str) -> bool:
    return text.startswith(f"{SCHEME}://")


def parse_url(text: str) -> ChainfsURL:
    """Splits a chainfs URL; raises ValueError naming what is wrong."""
    if not is_chainfs_url(text):
        raise ValueError(f"not a chainfs URL (expected chainfs://HOST:PORT/path): {text!r}")
    parts = urlsplit(text)
    if parts.query or parts.fragment:
        raise ValueError(f"chainfs URLs take no query or fragment: {text!r}")
    host = parts.hostname
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in chainfs URL {text!r}: {exc}") from exc
    if not host or port is None:
        raise ValueError(f"chainfs URL needs HOST:PORT: {text!r}")
    if port == 0:
        raise ValueError(f"port 0 is not a valid port: {text!r}")
    path = checked_path(parts.path or "/")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return ChainfsURL(host=host, port=port, path=path)
