"""`chainfs mount URL MOUNTPOINT` and `chainfs umount MOUNTPOINT`.

The mount runs in its own process (`python -m chainfs.client.mount.fuse_mount`), started in a new session
so it outlives the command; `mount` first checks that the metaserver answers (failing within a
second, naming it), then returns once the mountpoint is live, or fails with the mount process's own
error. `umount` never touches the mounted file system (a dead cluster would make a stat of it hang):
it finds the mount in /proc/self/mountinfo and asks fusermount to detach it, falling back to a lazy
unmount when the mount is busy or its process is gone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chainfs.cli.targets import CONNECT_TIMEOUT

MOUNT_DEADLINE = 30.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mount", help="mount a chainfs URL at a local directory (FUSE)")
    p.add_argument("url", help="chainfs://HOST:PORT[/path] (chainfs:///path uses $CHAINFS_ADDRESS)")
    p.add_argument("mountpoint", help="an existing empty directory")
    p.add_argument("--foreground", action="store_true", help="serve in this process until unmounted")
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser("umount", help="unmount a chainfs mount (works when the cluster is down too)")
    p.add_argument("mountpoint", help="where it is mounted")
    p.set_defaults(func=cmd_umount)


def fuse_available() -> str | None:
    """None when FUSE can be used here, otherwise why not."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if not (shutil.which("fusermount") or shutil.which("fusermount3")):
        return "fusermount is not installed (scripts/install_sysdeps.sh installs fuse3)"
    try:
        import fuse  # noqa: F401
    except (ImportError, OSError) as exc:  # fusepy raises OSError when libfuse is missing
        return f"fusepy or libfuse2 is unavailable: {exc}"
    return None


def cmd_mount(args: argparse.Namespace) -> int:
    from chainfs.client.rpc.meta_client import MetaClient
    from chainfs.client.url import parse_url

    url = parse_url(args.url)  # a malformed URL is the user's error, before any process starts
    mountpoint = Path(args.mountpoint)
    if not mountpoint.is_dir():
        raise NotADirectoryError(20, "mountpoint is not a directory", str(mountpoint))
    why = fuse_available()
    if why:
        raise RuntimeError(f"cannot mount: {why}")
    MetaClient(url.address).probe(CONNECT_TIMEOUT)
    if args.foreground:
        from chainfs.client.mount.fuse_mount import mount

        mount(str(url), str(mountpoint), foreground=True, debug=args.debug)
        return 0
    cmd = [sys.executable, "-m", "chainfs.client.mount.fuse_mount", str(url), str(mountpoint)]
    if args.debug:
        cmd.append("--debug")
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                start_new_session=True)
        deadline = time.monotonic() + MOUNT_DEADLINE
        while not is_mounted(str(mountpoint)):
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                errors.seek(0)
                lines = [ln for ln in errors.read().decode(errors="replace").splitlines() if ln.strip()]
                raise RuntimeError(f"mount of {url} at {mountpoint} failed: "
                                   f"{lines[-1] if lines else 'no mount within the deadline'}")
            time.sleep(0.05)
    print(f"mounted {url} at {mountpoint} (pid {proc.pid})")
    return 0


def _where(mountpoint: str) -> str:
    """The mountpoint's absolute path, resolving only its parent (the mount itself may be dead)."""
    path = os.path.abspath(mountpoint)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _mount_entry(mountpoint: str) -> str | None:
    """The file system type of the mount at `mountpoint`, from /proc/self/mountinfo, or None."""
    where = _where(mountpoint)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return "unknown" if os.path.ismount(where) else None
    for line in reversed(lines):
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields:
            continue
        point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
        if point == where:
            return fields[fields.index("-") + 1]
    return None


def is_mounted(mountpoint: str) -> bool:
    return _mount_entry(mountpoint) is not None


def cmd_umount(args: argparse.Namespace) -> int:
    mountpoint = _where(str(args.mountpoint))
    kind = _mount_entry(mountpoint)
    if kind is None:
        raise ValueError(f"not a mount point: {mountpoint}")
    tool = shutil.which("fusermount") or shutil.which("fusermount3")
    attempts = [[tool, "-u", mountpoint], [tool, "-uz", mountpoint]] if tool else []
    attempts.append(["umount", "-l", mountpoint])
    errors = []
    for cmd in attempts:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"{cmd[0]}: {exc}")
            continue
        if proc.returncode == 0 and not is_mounted(mountpoint):
            return 0
        errors.append(proc.stderr.strip() or f"{' '.join(cmd[:2])} exited {proc.returncode}")
    raise OSError(16, f"umount failed: {'; '.join(errors)}", mountpoint)
