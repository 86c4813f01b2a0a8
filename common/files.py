"""Small files a process publishes (its bound ports, a node's identity): whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: str | Path, text: str, *, sync_dir: bool = False) -> None:
    """Writes `text` to a temporary file beside `path`, fsyncs it and renames it over `path`, so a
    reader sees the old content or the new, never a part; `sync_dir` also makes the rename durable."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync_dir:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
