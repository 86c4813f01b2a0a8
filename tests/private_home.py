"""A private $XDG_CONFIG_HOME for a test module, so clusters' per-user files (credentials, TLS
profiles) land in a temp dir and their removal at stop can be checked."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def private_config_home(home: Path) -> Iterator[Path]:
    old = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(home)
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("XDG_CONFIG_HOME", None)
        else:
            os.environ["XDG_CONFIG_HOME"] = old
