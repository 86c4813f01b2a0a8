"""What the file commands' arguments name: a chainfs URL, a local path, or `-` (stdin/stdout).

Both kinds of path go through fsspec (ChainFileSystem or the local filesystem), so one copy routine
serves put, get, cp and sync. Glob patterns (`*`, `?`, `[...]`, `**`) expand on either side, as a
shell would expand them for local files. A cluster that does not answer fails the command within
CONNECT_TIMEOUT, naming its address; once connected, calls retry transient failures for longer.
"""

from __future__ import annotations

import glob
import os
import posixpath
import stat
import sys
import time
from dataclasses import dataclass
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from chainfs.client.fsspec.fs import ChainFileSystem
from chainfs.client.url import is_chainfs_url, parse_url

CONNECT_TIMEOUT = 1.0  # seconds to reach the metaserver before the command names it and fails
CLI_RETRY_DEADLINE = 10.0  # how long a connected command keeps retrying retryable failures
STDIO = "-"

_reached: set[str] = set()


class UsageError(ValueError):
    """A malformed argument: exit status 2, like argparse's own usage errors."""


@dataclass
class Target:
    fs: AbstractFileSystem | None  # None for `-`
    path: str
    text: str  # as the user wrote it (trailing slash kept)

    @property
    def is_chainfs(self) -> bool:
        return isinstance(self.fs, ChainFileSystem)

    @property
    def is_stdio(self) -> bool:
        return self.fs is None

    def child(self, name: str) -> "Target":
        join = posixpath.join if self.is_chainfs else os.path.join
        return Target(self.fs, join(self.path, name), posixpath.join(self.text, name))

    def descend(self, rel: str) -> "Target":
        t = self
        for part in rel.split("/"):
            t = t.child(part)
        return t


# Read local replicas' chunk files directly (`--no-short-circuit` turns it off for the command).
SHORT_CIRCUIT = True


def resolve(text: str) -> Target:
    """A URL, local path or `-` -> the filesystem and path it names (no glob expansion)."""
    if text == STDIO:
        return Target(None, STDIO, STDIO)
    if is_chainfs_url(text):
        try:
            url = parse_url(text)
        except OSError:
            raise
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        fs = ChainFileSystem(address=url.address, retry_deadline=CLI_RETRY_DEADLINE, short_circuit=SHORT_CIRCUIT)
        if url.address not in _reached:
            fs.client.meta.probe(CONNECT_TIMEOUT)
            _reached.add(url.address)
        return Target(fs, url.path, text)
    if "://" in text:
        raise UsageError(f"unsupported URL {text!r}: expected chainfs://HOST:PORT/path, a local path or -")
    return Target(LocalFileSystem(), os.path.abspath(text), text)


def expand(texts: list[str], allow_stdio: bool = False, missing_ok: bool = False) -> list[Target]:
    """Every argument, glob patterns replaced by their sorted matches (none is an error, as in
    `ls`, unless `missing_ok`)."""
    out: list[Target] = []
    for text in texts:
        t = resolve(text)
        if t.is_stdio:
            if not allow_stdio:
                raise UsageError("`-` (stdin/stdout) is not allowed here")
            out.append(t)
            continue
        if not glob.has_magic(t.path):
            out.append(t)
            continue
        if t.is_chainfs:
            matches = [(m, t.fs.unstrip_protocol(m)) for m in sorted(t.fs.glob(t.path))]  # type: ignore[union-attr]
        else:
            matches = [(os.path.abspath(m), m) for m in sorted(glob.glob(text, recursive=True))]
        if not matches and not missing_ok:
            raise FileNotFoundError(2, "no such file or directory (no match)", text)
        out.extend(Target(t.fs, path, shown) for path, shown in matches)
    return out


def info_of(t: Target) -> dict[str, Any]:
    assert t.fs is not None
    try:
        return t.fs.info(t.path)
    except FileNotFoundError:
        if t.is_chainfs:
            raise
        raise FileNotFoundError(2, "no such file or directory (neither a chainfs URL nor an existing local path)",
                                t.text) from None


def is_dir(t: Target) -> bool:
    if t.fs is None:
        return False
    try:
        return t.fs.isdir(t.path)
    except OSError:
        return False


def mtime_ns(t: Target, info: dict[str, Any]) -> int:
    if t.is_chainfs:
        return int(info["mtime_ns"])
    return os.stat(t.path).st_mtime_ns


def set_mtime_ns(t: Target, ns: int) -> None:
    """Gives a copy its source's modification time (what sync compares)."""
    if t.is_chainfs:
        t.fs.set_attrs(t.path, ns=(ns, ns))  # type: ignore[union-attr]
    elif not t.is_stdio:
        os.utime(t.path, ns=(ns, ns))


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def mode_string(info: dict[str, Any]) -> str:
    """`drwxr-xr-x` from an fsspec info dict (chainfs keeps permission bits, local the whole mode)."""
    kind = stat.S_IFDIR if info["type"] == "directory" else stat.S_IFREG
    mode = int(info.get("mode") or 0)
    return stat.filemode((mode if stat.S_IFMT(mode) else kind) | (mode & 0o7777))


def when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(seconds or 0)))


def stdout() -> Any:
    return sys.stdout.buffer
