"""`chainfs mount URL MOUNTPOINT` and `chainfs umount MOUNTPOINT`.

The mount runs in its own process (`python -m chainfs.client.fuse_mount`), started in a new session
so it outlives the command; `mount` returns once the mountpoint is live, or fails with the mount
process's own error. `umount` asks fusermount to detach it, which ends that process.
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

MOUNT_DEADLINE = 30.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mount", help="mount a chainfs URL at a local directory (FUSE)")
    p.add_argument("url", help="chainfs://HOST:PORT[/path]")
    p.add_argument("mountpoint")
    p.add_argument("--foreground", action="store_true", help="serve in this process until unmounted")
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser("umount", help="unmount a chainfs mount")
    p.add_argument("mountpoint")
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
    from chainfs.client.url import parse_url

    parse_url(args.url)  # a malformed URL is the user's error, before any process starts
    mountpoint = Path(args.mountpoint)
    if not mountpoint.is_dir():
        raise NotADirectoryError(20, "mountpoint is not a directory", str(mountpoint))
    why = fuse_available()
    if why:
        raise RuntimeError(f"cannot mount: {why}")
    if args.foreground:
        from chainfs.client.fuse_mount import mount

        mount(args.url, str(mountpoint), foreground=True, debug=args.debug)
        return 0
    cmd = [sys.executable, "-m", "chainfs.client.fuse_mount", args.url, str(mountpoint)]
    if args.debug:
        cmd.append("--debug")
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                start_new_session=True)
        deadline = time.monotonic() + MOUNT_DEADLINE
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                errors.seek(0)
                lines = [ln for ln in errors.read().decode(errors="replace").splitlines() if ln.strip()]
                raise RuntimeError(f"mount of {args.url} at {mountpoint} failed: "
                                   f"{lines[-1] if lines else 'no mount within the deadline'}")
            time.sleep(0.05)
    print(f"mounted {args.url} at {mountpoint} (pid {proc.pid})")
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    mountpoint = str(args.mountpoint)
    if not os.path.ismount(mountpoint):
        raise ValueError(f"not a mount point: {mountpoint}")
    tool = shutil.which("fusermount") or shutil.which("fusermount3")
    cmd = [tool, "-u", mountpoint] if tool else ["umount", mountpoint]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise OSError(16, f"umount failed: {proc.stderr.strip() or proc.returncode}", mountpoint)
    return 0
