"""The per-user credentials file: which token to present to which metaserver.

`~/.config/chainfs/credentials` (beside the TLS profiles, `common.tls_profiles`, and written the
same way: INI, mode 0600, under a lock), one section per metaserver address:

    [127.0.0.1:5000]
    token = cfs1....
    cluster = /tmp/c

`cluster up` and LocalCluster add their metaservers' sections (a root user token); `cluster down`
removes the sections that still name that cluster directory (another cluster may have taken the
port since). A section whose cluster directory is gone is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from chainfs.common import tls_profiles

NAME = "credentials"


def path() -> Path:
    return tls_profiles.path(NAME)


def lookup(address: str) -> str | None:
    """The token saved for metaserver `address`, or None."""
    parser = tls_profiles.read(path())
    if not parser.has_section(address):
        return None
    cluster = parser.get(address, "cluster", fallback="")
    if cluster and not os.path.isdir(cluster):
        return None
    return parser.get(address, "token", fallback="") or None


def save(addresses: Iterable[str], token: str, cluster: str | os.PathLike[str]) -> None:
    d = str(Path(cluster).resolve())
    with tls_profiles.editing(NAME) as parser:
        for address in addresses:
            if not parser.has_section(address):
                parser.add_section(address)
            parser[address].update(token=token, cluster=d)


def remove(addresses: Iterable[str], cluster: str | os.PathLike[str]) -> None:
    if not path().exists():
        return
    d = str(Path(cluster).resolve())
    with tls_profiles.editing(NAME) as parser:
        for address in addresses:
            if parser.has_section(address) and parser.get(address, "cluster", fallback="") == d:
                parser.remove_section(address)
