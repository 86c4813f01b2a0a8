"""The README's shell blocks, run as a new user runs them: from the repository root, each block in
its own bash (`set -euo pipefail`), scratch files under the test's temporary directory.

A few things cannot run verbatim inside the test suite, and each is run as close as it can be:
`make` lines (`make test` is the suite itself, `make demo` a three-minute run, `make vllm-setup` a
3.5 GB download) run as `make -n` (the targets exist and name their commands); the trace
replay's 500 requests are cut to 3; fixed server ports are swapped for free ones. A block the
machine cannot run (no FUSE, no traces, no `.venv-vllm`) is skipped with the reason, and the vLLM
block fails instead when CHAINFS_REQUIRE_VLLM=1 (as `make test` sets it). Tables and shell lines
must fit 80 columns.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from chainfs.cli.mount_cmd import fuse_available, is_mounted

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TRACES = Path(os.environ.get("TRACES", str(ROOT.parent / "shared" / "traces")))
SCALED = {"--max-requests 500": "--max-requests 3"}


def shell_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.S | re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def block_id(block: str) -> str:
    first = next(line for line in block.splitlines() if line and not line.startswith(("export PATH", "WORK=")))
    return re.sub(r"\W+", "-", first)[:40].strip("-")


@pytest.mark.timeout(480)  # above the block's own 420 s limit (the vLLM block starts a server)
@pytest.mark.parametrize("block", shell_blocks(), ids=block_id)
def test_readme_block_runs(block: str, tmp_path: Path) -> None:
    if all(line.startswith("make ") for line in block.strip().splitlines()):
        targets = [line.split()[1] for line in block.strip().splitlines()]
        proc = subprocess.run(["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "chainfs loadtest run" in proc.stdout and "pytest" in proc.stdout
        return
    if "chainfs mount" in block and fuse_available() is not None:
        pytest.skip(f"FUSE unavailable: {fuse_available()}")
    if "$TRACES" in block and not (TRACES / "mooncake_conversation.jsonl").exists():
        pytest.skip(f"the Mooncake traces are not in {TRACES} (set TRACES to their folder)")
    if ".venv-vllm" in block and not (ROOT / ".venv-vllm" / "bin" / "python").exists():
        if os.environ.get("CHAINFS_REQUIRE_VLLM") == "1":
            pytest.fail("the README's vLLM block needs .venv-vllm (make vllm-setup)")
        pytest.skip("the README's vLLM block needs .venv-vllm (make vllm-setup, a 3.5 GB download)")
    script = re.sub(r"^make ", "make -n ", block, flags=re.M)
    for long, short in SCALED.items():
        script = script.replace(long, short)
    for fixed in set(re.findall(r"--port (8\d{3})\b", script)):
        script = script.replace(fixed, str(free_port()))  # the same port in the URLs that name it
    env = {**os.environ, "TMPDIR": str(tmp_path), "TRACES": str(TRACES)}
    env.pop("CHAINFS_ADDRESS", None)
    proc = subprocess.Popen(["bash", "-c", "set -euo pipefail\ntrap 'jobs -p | xargs -r kill' EXIT\n" + script],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    finally:
        _clean_up(tmp_path)
    assert proc.returncode == 0, f"README block failed ({proc.returncode}):\n{script}\n--- output ---\n{out[-4000:]}"


def _clean_up(tmp_path: Path) -> None:
    """Whatever a failed block left: mounts, then clusters (each by its own directory)."""
    chainfs = shutil.which("chainfs", path=str(ROOT / ".venv" / "bin")) or "chainfs"
    for mnt in tmp_path.glob("*/mnt"):
        if is_mounted(str(mnt)):
            subprocess.run([chainfs, "umount", str(mnt)], capture_output=True, timeout=60)
    for state in tmp_path.glob("*/*/cluster.json"):
        subprocess.run([chainfs, "cluster", "down", "--dir", str(state.parent)], capture_output=True, timeout=120)


def test_tables_and_code_fit_80_columns() -> None:
    text = README.read_text()
    wide = [line for line in text.splitlines() if line.startswith("|") and len(line) > 80]
    assert not wide, f"table lines over 80 columns: {wide}"
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
        long = [line for line in block.splitlines() if len(line) > 80]
        assert not long, f"shell lines over 80 columns: {long}"
    for table in re.findall(r"((?:^\|.*\n)+)", text, re.M):  # as rendered: cells padded to align
        rows = [[c.strip() for c in row.strip().strip("|").split("|")] for row in table.splitlines()]
        widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
        assert sum(widths) + 3 * len(widths) + 1 <= 80, f"table renders wider than 80 columns:\n{table}"
