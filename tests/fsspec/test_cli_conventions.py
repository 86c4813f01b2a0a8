"""The CLI's conventions, through the real `chainfs` command against a real cluster: `-` for
stdin/stdout, globs, ls -R, -h sizes, --version, quiet closed pipes, flags anywhere,
$CHAINFS_ADDRESS, fast failure on a dead address, help texts, and sync."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chainfs.cli.main import build_parser
from chainfs.cli.targets import CLI_RETRY_DEADLINE
from chainfs.client.fsspec.fs import ChainFileSystem
from chainfs.cluster import LocalCluster

pytestmark = pytest.mark.integration

CHAINFS = [sys.executable, "-m", "chainfs.cli.main"]


def run(*args: str, code: int = 0, stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CHAINFS, *args], input=stdin, capture_output=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == code, f"chainfs {' '.join(args)} -> {proc.returncode}: {proc.stderr.decode()}"
    return proc


def shell(script: str) -> subprocess.CompletedProcess:
    """A pipeline as a user types it; pipefail so chainfs's own exit status counts."""
    chainfs = " ".join(CHAINFS)
    return subprocess.run(["bash", "-o", "pipefail", "-c", script.replace("chainfs ", chainfs + " ")],
                          capture_output=True, timeout=120)


@pytest.fixture()
def url(cluster: LocalCluster, base: str) -> str:
    return f"{cluster.url}{base}"


def test_dash_is_stdin_and_stdout(url: str, cfs: ChainFileSystem, base: str, tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"tail"
    run("put", "-", f"{url}/in.bin", stdin=data)
    assert cfs.cat_file(f"{base}/in.bin") == data
    assert run("cp", f"{url}/in.bin", "-").stdout == data
    assert run("get", f"{url}/in.bin", "-").stdout == data
    assert not (Path.cwd() / "-").exists()
    run("cp", "-", f"{url}/via-cp.txt", stdin=b"typed")
    assert run("cat", f"{url}/via-cp.txt", "-", f"{url}/via-cp.txt", stdin=b"|").stdout == b"typed|typed"
    # /dev/stdin is a pipe here: unseekable sources stream too.
    proc = shell(f"head -c 100000 /dev/zero | chainfs put /dev/stdin {url}/zeros.bin")
    assert proc.returncode == 0, proc.stderr
    assert cfs.cat_file(f"{base}/zeros.bin") == bytes(100000)
    assert b"directory" in run("put", "-", f"{url}/", stdin=b"x", code=2).stderr


def test_closed_pipe_exits_quietly(url: str, cfs: ChainFileSystem, base: str) -> None:
    cfs.pipe_file(f"{base}/big.bin", bytes(40 << 20))
    proc = shell(f"chainfs cat {url}/big.bin | head -c 10 | wc -c")
    assert proc.returncode == 0 and proc.stdout.strip() == b"10"
    assert proc.stderr == b"", proc.stderr


def test_globs_in_every_path_command(url: str, cfs: ChainFileSystem, base: str, tmp_path: Path) -> None:
    for name in ("g1.bin", "g2.bin", "h.bin", "sub/g3.bin"):
        cfs.pipe_file(f"{base}/{name}", name.encode())
    assert run("ls", f"{url}/g*.bin").stdout.split() == [b"g1.bin", b"g2.bin"]
    assert run("cat", f"{url}/g?.bin").stdout == b"g1.bing2.bin"
    assert run("stat", "--json", f"{url}/[gh]*.bin").stdout.count(b"\n") == 3
    assert run("du", "-s", f"{url}/g*").stdout.count(b"\n") == 2
    run("get", f"{url}/g*.bin", f"{tmp_path}/")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g1.bin", "g2.bin"]
    (tmp_path / "l1.txt").write_text("one")
    (tmp_path / "l2.txt").write_text("two")
    run("put", str(tmp_path / "l*.txt"), f"{url}/up/")
    assert sorted(cfs.ls(f"{base}/up", detail=False)) == [f"{base}/up/l1.txt", f"{base}/up/l2.txt"]
    run("mv", f"{url}/up/l*.txt", f"{url}/sub")
    assert sorted(cfs.ls(f"{base}/sub", detail=False)) == [f"{base}/sub/{n}" for n in ("g3.bin", "l1.txt", "l2.txt")]
    run("rm", f"{url}/g*.bin")
    assert cfs.ls(base, detail=False) == [f"{base}/h.bin", f"{base}/sub", f"{base}/up"]
    missing = run("ls", f"{url}/nothing*", code=1)
    assert b"no match" in missing.stderr and b"nothing*" in missing.stderr
    run("rm", "-f", f"{url}/nothing*")


def test_ls_recursive_long_and_human_sizes(url: str, cfs: ChainFileSystem, base: str) -> None:
    cfs.pipe_file(f"{base}/a/b/deep.bin", bytes(3 << 20))
    cfs.pipe_file(f"{base}/top.txt", b"x")
    out = run("ls", "-R", url).stdout.decode().splitlines()
    assert out == [f"{url}:", "a/", "top.txt", "", f"{url}/a:", "b/", "", f"{url}/a/b:", "deep.bin"]
    long = run("ls", "-lh", f"{url}/a/b").stdout.decode()
    assert long.startswith("-rw-r--r-- ") and "3.0 MiB" in long and "deep.bin" in long
    assert run("ls", "-l", f"{url}/a/b").stdout.split()[1] == str(3 << 20).encode()
    assert run("du", "-sh", url).stdout.split()[:2] == [b"3.0", b"MiB"]
    assert b"usage" not in run("du", "-h", url).stdout


def test_version_help_and_flags_anywhere(url: str, cfs: ChainFileSystem, base: str) -> None:
    assert run("--version").stdout.decode().startswith("chainfs ")
    assert b"--human-readable" in run("ls", "--help").stdout
    serve = run("meta", "serve", "--help").stdout.decode()
    assert serve.startswith("usage: chainfs meta serve") and "python -m" not in serve
    assert "(default: 127.0.0.1)" in serve and "namespace and cluster manager" in serve
    assert "(default: 4)" in run("storage", "serve", "--help").stdout.decode()
    cfs.pipe_file(f"{base}/f", b"1")
    run("ls", f"{url}/f", "--debug")
    failed = run("cat", f"{url}/missing", "--debug", code=1)
    assert b"Traceback" in failed.stderr  # --debug after the subcommand took effect


def test_every_subcommand_has_a_description_and_helped_options() -> None:
    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        assert parser.description, f"{name}: no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")
            else:
                assert action.help, f"{name} {action.option_strings or action.dest}: no help text"

    walk(build_parser(), "chainfs")


def test_address_from_the_environment(cluster: LocalCluster, cfs: ChainFileSystem, base: str) -> None:
    cfs.pipe_file(f"{base}/env.txt", b"via env")
    env = {"CHAINFS_ADDRESS": cluster.address}
    assert run("cat", f"chainfs://{base}/env.txt", env=env).stdout == b"via env"  # chainfs:///t-.../env.txt
    unset = run("ls", "chainfs:///x", env={"CHAINFS_ADDRESS": ""}, code=2)
    assert b"CHAINFS_ADDRESS" in unset.stderr


def test_unreachable_cluster_fails_fast_naming_it() -> None:
    started = time.monotonic()
    proc = run("ls", "chainfs://127.0.0.1:9/x", code=1)
    elapsed = time.monotonic() - started
    assert b"127.0.0.1:9" in proc.stderr and b"cannot reach" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert elapsed < CLI_RETRY_DEADLINE, f"took {elapsed:.1f} s: the connect probe did not cut the retries short"


def test_sync_twice_sends_nothing_the_second_time(url: str, cfs: ChainFileSystem, base: str,
                                                   tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(os.urandom(5 << 20))
    (src / "gone.txt").write_text("bye")
    first = run("sync", str(src), f"{url}/mirror")
    assert first.stdout.count(b"copy ") == 3 and b"copied 3 files" in first.stderr
    assert cfs.cat_file(f"{base}/mirror/sub/b.bin") == (src / "sub" / "b.bin").read_bytes()
    assert cfs.info(f"{base}/mirror/a.txt")["mtime_ns"] == os.stat(src / "a.txt").st_mtime_ns
    second = run("sync", str(src), f"{url}/mirror")
    assert second.stdout == b"" and b"copied 0 files" in second.stderr and b"3 up to date" in second.stderr

    (src / "gone.txt").unlink()
    (src / "a.txt").write_text("ALPHA!")  # new size and mtime
    dry = run("sync", "--delete", "--dry-run", str(src), f"{url}/mirror")
    assert b"would copy 1 files" in dry.stderr and b"would delete 1" in dry.stderr
    assert cfs.cat_file(f"{base}/mirror/a.txt") == b"alpha" and cfs.exists(f"{base}/mirror/gone.txt")
    run("sync", "--delete", str(src), f"{url}/mirror")
    assert cfs.cat_file(f"{base}/mirror/a.txt") == b"ALPHA!" and not cfs.exists(f"{base}/mirror/gone.txt")

    back = tmp_path / "back"
    assert b"copied 2 files" in run("sync", f"{url}/mirror", str(back)).stderr
    assert (back / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    assert b"copied 0 files" in run("sync", f"{url}/mirror", str(back)).stderr
