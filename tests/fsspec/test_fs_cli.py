"""The file CLI on chainfs:// URLs and local paths: commands, exit codes 0/1/2, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chainfs.client.fsspec.fs import ChainFileSystem
from chainfs.cluster import LocalCluster

pytestmark = pytest.mark.integration

CHAINFS = [sys.executable, "-m", "chainfs.cli.main"]


def run(*args: str, code: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CHAINFS, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, f"chainfs {' '.join(args)} -> {proc.returncode}: {proc.stderr}"
    if code == 1:  # operation failures: one line; usage errors also show argparse's usage line
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    return proc


def test_copy_move_list_remove(cluster: LocalCluster, cfs: ChainFileSystem, base: str, tmp_path: Path) -> None:
    url = f"{cluster.url}{base}"
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello")
    (src / "sub" / "b.bin").write_bytes(os.urandom(3 << 20))
    run("put", "-r", str(src), f"{url}/")
    assert sorted(cfs.find(f"{base}/src")) == [f"{base}/src/a.txt", f"{base}/src/sub/b.bin"]
    assert run("ls", f"{url}/src").stdout.split() == ["a.txt", "sub/"]
    assert "a.txt" in run("ls", "-l", f"{url}/src").stdout
    assert run("cat", f"{url}/src/a.txt").stdout == "hello"
    assert json.loads(run("stat", "--json", f"{url}/src/a.txt").stdout)["size"] == 5
    assert run("du", "-s", f"{url}/src").stdout.split()[0] == str(5 + (3 << 20))
    run("cp", "-r", f"{url}/src", f"{url}/copy")
    run("mv", f"{url}/copy", f"{url}/moved")
    assert cfs.cat_file(f"{base}/moved/sub/b.bin") == (src / "sub" / "b.bin").read_bytes()
    run("get", "-r", f"{url}/moved", str(tmp_path / "back"))
    assert (tmp_path / "back" / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    run("cp", str(src / "a.txt"), str(tmp_path / "local-copy.txt"))  # local to local works too
    assert (tmp_path / "local-copy.txt").read_text() == "hello"
    run("mkdir", "-p", f"{url}/m/n")
    assert cfs.isdir(f"{base}/m/n")
    assert "use -r" in run("rm", f"{url}/moved", code=1).stderr
    run("rm", "-r", f"{url}/moved", f"{url}/m")
    run("rm", "-f", f"{url}/never-was")
    assert not cfs.exists(f"{base}/moved")


def test_errors_and_exit_codes(cluster: LocalCluster, cfs: ChainFileSystem, base: str) -> None:
    url = f"{cluster.url}{base}"
    assert "no such file" in run("cat", f"{url}/missing", code=1).stderr
    cfs.pipe_file(f"{base}/file", b"1")
    assert "not a directory" in run("mkdir", f"{url}/file/below", code=1).stderr.lower()
    assert "name longer than 255" in run("put", __file__, f"{url}/{'n' * 300}", code=1).stderr
    assert "port" in run("ls", "chainfs://127.0.0.1:notaport/x", code=2).stderr
    assert "unsupported URL" in run("ls", "s3://bucket/key", code=2).stderr
    run("frobnicate", code=2)
    assert "127.0.0.1:9" in run("ls", "chainfs://127.0.0.1:9/x", code=1).stderr
