"""The mount as a real file system, through real tools: attributes (chmod, chown, touch -d, cp -a,
rsync -a twice), truncate, writes at any offset with close-to-open visibility, SQLite with its
rollback journal, fsync, df against `cluster status`, symlinks, and umount/mount against a dead
cluster."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from chainfs.cli.mount_cmd import fuse_available, is_mounted
from chainfs.client.fsspec.fs import ChainFileSystem
from chainfs.cluster import LocalCluster

from tests.fsspec.mounting import chainfs, mount_at, unmount

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(fuse_available() is not None, reason=f"FUSE unavailable: {fuse_available()}")]

MiB = 1 << 20


@pytest.fixture()
def here(mounted: Path, cfs: ChainFileSystem) -> Iterator[tuple[Path, str]]:
    """A fresh directory in the mount, and its chainfs path."""
    name = f"p-{uuid.uuid4().hex[:8]}"
    (mounted / name).mkdir()
    yield mounted / name, f"/{name}"
    cfs.rm(f"/{name}", recursive=True)


def sh(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)


def test_chmod_chown_touch_are_stored_and_shown(here: tuple[Path, str], cfs: ChainFileSystem) -> None:
    d, base = here
    f = d / "f.txt"
    f.write_text("x")
    sh("chmod", "640", str(f))
    sh("chown", "1234:5678", str(f))
    sh("touch", "-d", "2020-01-02 03:04:05.123456789 UTC", str(f))
    st = os.stat(f)
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert st.st_mtime_ns == 1577934245123456789
    assert sh("stat", "-c", "%a %u %g %Y", str(f)).stdout.split() == ["640", "1234", "5678", "1577934245"]
    info = cfs.info(f"{base}/f.txt")  # stored in the inode, not in the mount
    assert (info["mode"], info["uid"], info["gid"], info["mtime_ns"]) == (0o640, 1234, 5678, 1577934245123456789)
    sh("chmod", "750", str(d))
    assert os.stat(d).st_mode & 0o777 == 0o750 and cfs.info(base)["mode"] == 0o750


def test_cp_a_and_rsync_a_keep_attributes_and_resend_nothing(here: tuple[Path, str], tmp_path: Path) -> None:
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (scripts/install_sysdeps.sh installs it)")
    d, _ = here
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "big.bin").write_bytes(os.urandom(9 * MiB + 7))
    os.chmod(src / "a.txt", 0o604)
    os.utime(src / "a.txt", ns=(1_600_000_000_111_111_111, 1_600_000_000_222_222_222))
    sh("cp", "-a", str(src / "a.txt"), str(d / "copied.txt"))
    st = os.stat(d / "copied.txt")
    assert (st.st_mode & 0o777, st.st_mtime_ns) == (0o604, 1_600_000_000_222_222_222)

    first = sh("rsync", "-a", "--stats", f"{src}/", f"{d}/mirror/").stdout
    assert "Number of regular files transferred: 2" in first
    second = sh("rsync", "-a", "--stats", f"{src}/", f"{d}/mirror/").stdout
    assert "Number of regular files transferred: 0" in second, second
    assert (d / "mirror" / "sub" / "big.bin").read_bytes() == (src / "sub" / "big.bin").read_bytes()
    assert os.stat(d / "mirror" / "a.txt").st_mtime_ns == 1_600_000_000_222_222_222
    assert sh("rsync", "-a", "--checksum", "--stats", f"{src}/", f"{d}/mirror/").stdout.count(
        "Number of regular files transferred: 0") == 1


def test_truncate_to_any_length(here: tuple[Path, str], cfs: ChainFileSystem) -> None:
    d, base = here
    data = os.urandom(9 * MiB + 100)
    (d / "t.bin").write_bytes(data)
    sh("truncate", "-s", str(5 * MiB + 17), str(d / "t.bin"))
    assert cfs.cat_file(f"{base}/t.bin") == data[:5 * MiB + 17]
    sh("truncate", "-s", str(13 * MiB), str(d / "t.bin"))  # grown: the new bytes read as zeros
    assert cfs.cat_file(f"{base}/t.bin") == data[:5 * MiB + 17] + bytes(13 * MiB - 5 * MiB - 17)
    sh("truncate", "-s", "0", str(d / "t.bin"))
    assert os.path.getsize(d / "t.bin") == 0 and cfs.cat_file(f"{base}/t.bin") == b""
    (d / "small").write_text("abcdef")
    os.truncate(d / "small", 3)
    assert (d / "small").read_text() == "abc"
    assert chainfs("fsck", "chainfs://" + cfs.address).returncode == 0  # chunks match every length


def test_writes_at_any_offset_visible_at_close(here: tuple[Path, str], cfs: ChainFileSystem) -> None:
    d, base = here
    data = bytearray(os.urandom(6 * MiB))
    (d / "w.bin").write_bytes(data)
    with open(d / "w.bin", "r+b") as f:
        for offset, piece in ((100, b"first"), (4 * MiB - 2, b"across-a-chunk"), (6 * MiB + 10, b"past-the-end")):
            f.seek(offset)
            f.write(piece)
            end = offset + len(piece)
            data[len(data):end] = bytes(max(0, end - len(data)))
            data[offset:end] = piece
        f.seek(4 * MiB - 2)
        assert f.read(14) == b"across-a-chunk"  # the writer reads its own bytes before any commit
    assert cfs.cat_file(f"{base}/w.bin") == bytes(data)  # committed at close, seen by another client
    cfs.pipe_file(f"{base}/w.bin", b"rewritten elsewhere")
    assert (d / "w.bin").read_bytes() == b"rewritten elsewhere"  # a new open sees the new commit
    fd = os.open(d / "w.bin", os.O_WRONLY)
    try:
        os.pwrite(fd, b"R", 0)
        os.fsync(fd)
        assert cfs.cat_file(f"{base}/w.bin") == b"Rewritten elsewhere"  # fsync commits
    finally:
        os.close(fd)


def test_sqlite_with_its_rollback_journal(here: tuple[Path, str]) -> None:
    d, _ = here
    path = d / "test.db"
    db = sqlite3.connect(path)
    assert db.execute("pragma journal_mode").fetchone()[0] == "delete"
    db.execute("create table t (id integer primary key, name text, value real)")
    db.commit()
    for batch in range(20):
        with db:  # one transaction each
            db.executemany("insert into t (name, value) values (?, ?)",
                           [(f"row-{batch}-{i}", i * 0.5) for i in range(500)])
    with pytest.raises(sqlite3.IntegrityError), db:  # a rolled-back transaction leaves nothing
        db.execute("insert into t (id, name, value) values (1, 'dup', 0)")
    db.close()
    assert not (d / "test.db-journal").exists()
    db = sqlite3.connect(path)
    try:
        assert db.execute("select count(*), sum(value), max(name) from t").fetchone() == (
            10000, 20 * sum(i * 0.5 for i in range(500)), "row-9-99")
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
    if shutil.which("sqlite3"):
        assert sh("sqlite3", str(path), "select count(*) from t; pragma integrity_check;").stdout.split() == [
            "10000", "ok"]


def test_symlinks_are_not_supported(here: tuple[Path, str]) -> None:
    d, _ = here
    (d / "target").write_text("t")
    proc = subprocess.run(["ln", "-s", "target", str(d / "link")], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "Operation not supported" in proc.stderr
    assert "Read-only" not in proc.stderr


def test_df_matches_cluster_status(mounted: Path, cluster: LocalCluster) -> None:
    status = chainfs("cluster", "status", "--dir", str(cluster.root), "--json")
    assert status.returncode == 0, status.stderr
    space = json.loads(status.stdout)["space"]
    df = sh("df", "-B1", "--output=size,avail", str(mounted)).stdout.split()
    size, avail = int(df[2]), int(df[3])
    assert space["usable_bytes"] - 4096 < size <= space["usable_bytes"]  # whole 4 KiB blocks
    assert space["disks"] >= 1 and space["replication"] == 3
    assert abs(avail - space["usable_free_bytes"]) < 256 * MiB  # other processes use the disk too


def test_umount_with_the_cluster_down_and_mounting_a_dead_address(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "c", storage_nodes=1, replicas=1, targets_per_node=1) as small:
        url = small.url
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        mount_at(url, mnt)
        try:
            (mnt / "f").write_text("kept")
        except BaseException:
            unmount(mnt)
            raise
    # The cluster is gone; the mount is still there.
    assert is_mounted(str(mnt))
    unmount(mnt)
    started = time.monotonic()
    dead = chainfs("mount", url, str(mnt), timeout=60)
    assert dead.returncode == 1 and "cannot reach the metaserver" in dead.stderr and url[10:] in dead.stderr
    assert time.monotonic() - started < 10 and not is_mounted(str(mnt))


def test_unlinked_open_file_stays_readable_and_never_reappears(here: tuple[Path, str],
                                                                cfs: ChainFileSystem) -> None:
    d, base = here
    fd = os.open(d / "scratch", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"temporary bytes")
        os.unlink(d / "scratch")
        assert not (d / "scratch").exists()
        assert os.pread(fd, 9, 0) == b"temporary"
        os.write(fd, b"!")
        assert os.fstat(fd).st_size == 16
    finally:
        os.close(fd)
    assert not (d / "scratch").exists() and not cfs.exists(f"{base}/scratch")  # the close committed nothing
