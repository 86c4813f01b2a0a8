"""The FUSE mount, started by `chainfs mount` as its own process and removed by `chainfs umount`."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from chainfs.cli.mount_cmd import fuse_available
from chainfs.client.fsspec.fs import ChainFileSystem

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(fuse_available() is not None, reason=f"FUSE unavailable: {fuse_available()}")]

BIG = 100 << 20


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def test_big_file_cp_in_and_out(mounted: Path, cfs: ChainFileSystem, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(BIG >> 20):
            f.write(os.urandom(1 << 20))
    subprocess.run(["cp", str(src), str(mounted / "big-in.bin")], check=True, timeout=300)
    # Committed when cp closed the file: fsspec sees it whole, right away.
    assert cfs.info("/big-in.bin")["size"] == BIG
    h = hashlib.md5()
    with cfs.open("/big-in.bin", "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    assert h.hexdigest() == _md5(src)

    with cfs.open("/big-out.bin", "wb") as f, open(src, "rb") as fin:
        while block := fin.read(8 << 20):
            f.write(block[::-1])
    expected = hashlib.md5()
    with open(src, "rb") as fin:
        while block := fin.read(8 << 20):
            expected.update(block[::-1])
    dst = tmp_path / "back.bin"
    subprocess.run(["cp", str(mounted / "big-out.bin"), str(dst)], check=True, timeout=300)
    assert _md5(dst) == expected.hexdigest()
    cfs.rm(["/big-in.bin", "/big-out.bin"])


def test_posix_operations(mounted: Path, cfs: ChainFileSystem) -> None:
    d = mounted / "posix"
    d.mkdir()
    (d / "a.txt").write_text("alpha")
    with open(d / "a.txt", "a") as f:
        f.write("-beta")
    assert (d / "a.txt").read_text() == "alpha-beta"
    assert cfs.cat_file("/posix/a.txt") == b"alpha-beta"
    subprocess.run(["mv", str(d / "a.txt"), str(d / "b.txt")], check=True, timeout=30)
    subprocess.run(["mkdir", "-p", str(d / "x" / "y")], check=True, timeout=30)
    subprocess.run(["cp", str(d / "b.txt"), str(d / "x" / "y" / "c.txt")], check=True, timeout=30)
    listing = subprocess.run(["ls", str(d)], capture_output=True, text=True, check=True, timeout=30).stdout.split()
    assert listing == ["b.txt", "x"]
    assert sorted(cfs.find("/posix")) == ["/posix/b.txt", "/posix/x/y/c.txt"]
    cfs.pipe_file("/posix/from-fsspec", b"seen through the mount")
    assert (d / "from-fsspec").read_bytes() == b"seen through the mount"
    subprocess.run(["rm", "-r", str(d / "x")], check=True, timeout=30)
    os.remove(d / "b.txt")
    with pytest.raises(FileNotFoundError):
        open(d / "missing")
    subprocess.run(["rm", "-rf", str(d)], check=True, timeout=30)
    assert not cfs.exists("/posix")


def test_fsync_commits_before_close(mounted: Path, cfs: ChainFileSystem) -> None:
    """After fsync(2) returns, the bytes are committed and readable elsewhere, the file still open."""
    target = mounted / "fsync.bin"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"first part|")
        os.fsync(fd)
        assert cfs.cat_file("/fsync.bin") == b"first part|"
        os.write(fd, b"second part")
    finally:
        os.close(fd)
    assert cfs.cat_file("/fsync.bin") == b"first part|second part"
