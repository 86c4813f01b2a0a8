"""Starting and stopping detached server processes, by pid, with deadlines instead of sleeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Polls until predicate() is true; raises TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def spawn(module: str, args: list[str], log_path: Path, wrap: list[str] | None = None) -> subprocess.Popen:
    """Starts `python -m module args` in its own session, logging to log_path; `wrap` prefixes the
    command (`ip netns exec NS` runs it on a netns host; it execs, so the pid stays the server's)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [*(wrap or []), sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )


def is_alive(pid: int) -> bool:
    """True while pid runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def is_ours(pid: int, marker: str) -> bool:
    """Guards against signalling a reused pid: its command line must name our module."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def reap(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        try:
            proc.wait(timeout=0)
        except subprocess.TimeoutExpired:
            pass


def stop_pid(pid: int, marker: str, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM (after SIGCONT, in case it is paused), then SIGKILL if it outlives the deadline."""
    if not is_alive(pid) or not is_ours(pid, marker):
        reap(proc)
        return
    for sig in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
    try:
        wait_for(lambda: (reap(proc), not is_alive(pid))[1], timeout, f"pid {pid} to exit")
    except TimeoutError:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_for(lambda: (reap(proc), not is_alive(pid))[1], 10.0, f"pid {pid} to die")


def read_port(port_file: Path) -> int | None:
    try:
        text = port_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None
