"""Mounting through the real `chainfs mount` / `chainfs umount` commands, for the FUSE tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


CHAINFS = [sys.executable, "-m", "chainfs.cli.main"]


def chainfs(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real `chainfs` command."""
    return subprocess.run([*CHAINFS, *args], capture_output=True, text=True, timeout=timeout)


def mount_at(url: str, mnt: Path) -> None:
    proc = chainfs("mount", url, str(mnt))
    if proc.returncode != 0 and "fusermount" in proc.stderr and "permission" in proc.stderr.lower():
        pytest.skip(f"FUSE mounts are not permitted here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert os.path.ismount(mnt)


def unmount(mnt: Path) -> None:
    """`chainfs umount`, then make sure no test run leaves a mount behind."""
    result = chainfs("umount", str(mnt))
    if result.returncode != 0:
        subprocess.run(["fusermount", "-uz", str(mnt)], capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while os.path.ismount(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.ismount(mnt)
    deadline = time.monotonic() + 30  # its process ends once in-flight calls return (slow when loaded)
    while mount_processes(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not mount_processes(mnt), f"the mount process of {mnt} outlived its mount"


def mount_processes(mnt: Path) -> list[int]:
    """Pids of `python -m chainfs.client.mount.fuse_mount URL MNT` processes serving `mnt`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"chainfs.client.mount.fuse_mount" in argv and str(mnt).encode() in argv:
                found.append(int(entry))
    return found
