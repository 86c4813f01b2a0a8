"""The per-user TLS profiles: which CA and client certificate to use for which metaserver.

`~/.config/chainfs/tls` (or under `$XDG_CONFIG_HOME`), mode 0600, one INI section per metaserver
address, as the AWS CLI keeps its credentials:

    [127.0.0.1:5000]
    ca = /tmp/c/tls/ca.pem
    cert = /tmp/c/tls/client.pem
    key = /tmp/c/tls/client.key

`cluster up --tls` and `LocalCluster(tls=True)` add their metaservers' sections; `cluster down`
removes them. A section whose files are gone (a cluster directory deleted without `down`) is
ignored, so a later plaintext cluster on the same port is not mistaken for it.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

from chainfs.common.tls import TlsConfig

log = logging.getLogger(__name__)

KEYS = ("ca", "cert", "key")


def path(name: str = "tls") -> Path:
    """`~/.config/chainfs/NAME` (under `$XDG_CONFIG_HOME` when set): this file, and the
    credentials file (`common.credentials`) beside it."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "chainfs" / name


def read(p: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(p.read_text())
    except FileNotFoundError:
        pass
    except (OSError, configparser.Error) as exc:
        log.warning("ignoring unreadable %s: %s", p, exc)
    return parser


def lookup(address: str) -> TlsConfig | None:
    """The profile of metaserver `address`, or None (none, or its files no longer exist)."""
    section = read(path())
    if not section.has_section(address):
        return None
    files = [section.get(address, k, fallback="") for k in KEYS]
    if not all(files) or not all(os.path.exists(f) for f in files):
        return None
    return TlsConfig.load(*files)


@contextlib.contextmanager
def editing(name: str = "tls") -> Iterator[configparser.ConfigParser]:
    """The INI file `path(name)` under an exclusive lock, written back (mode 0600) on exit."""
    p = path(name)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(p.with_name(f"{name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several clusters start at once in a test run
        parser = read(p)
        yield parser
        tmp = p.with_name(f"{name}.tmp.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            parser.write(f)
        os.replace(tmp, p)


def save(addresses: Iterable[str], directory: str | os.PathLike[str], name: str = "client") -> None:
    """Points every address at DIR/ca.pem, DIR/NAME.pem and DIR/NAME.key."""
    d = Path(directory).resolve()
    with editing() as parser:
        for address in addresses:
            if not parser.has_section(address):
                parser.add_section(address)
            parser[address].update(ca=str(d / "ca.pem"), cert=str(d / f"{name}.pem"), key=str(d / f"{name}.key"))


def remove(addresses: Iterable[str], directory: str | os.PathLike[str]) -> None:
    """Drops the sections of these addresses that still point into `directory` (another cluster
    may have taken the port since)."""
    if not path().exists():
        return
    d = str(Path(directory).resolve())
    with editing() as parser:
        for address in addresses:
            if parser.has_section(address) and parser.get(address, "ca", fallback="").startswith(d + os.sep):
                parser.remove_section(address)
