"""Checks docs/architecture.md's code map against the tree: every library module (not tests, not
generated protobuf code, not package `__init__`/`__main__` files) is named in it, and every path
it names exists. Exits 1 listing what differs. Run: `python scripts/check_code_map.py`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
SKIP_DIRS = ("tests/", "scripts/")  # not library code: the tests and the tools that build and check


def library_modules() -> set[str]:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "*.py"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split()
    out = set()
    for path in tracked + untracked:
        name = Path(path).name
        if (path.startswith(SKIP_DIRS) or "_pb2" in name or name in ("__init__.py", "__main__.py")
                or not (ROOT / path).exists()):
            continue
        out.add(path)
    return out


def named_paths(text: str) -> set[str]:
    """What the map's rows name in their module column: `folder/file.py`, or `folder/` for a whole
    room (its modules count as named)."""
    out: set[str] = set()
    for line in text.splitlines():
        if line.startswith("|") and line.rstrip().endswith("|"):
            cell = line.rstrip().rstrip("|").rsplit("|", 1)[-1]
            out |= set(re.findall(r"`([\w./-]+\.py|[\w/-]+/)`", cell))
    return out


def main() -> int:
    text = DOC.read_text(encoding="utf-8")
    named = named_paths(text)
    folders = {n for n in named if n.endswith("/")}
    files = {n for n in named if n.endswith(".py")} | set(re.findall(r"`([\w-]+/[\w./-]+\.py)`", text))
    missing = sorted(m for m in library_modules()
                     if m not in files and not any(m.startswith(f) for f in folders))
    dangling = sorted(f for f in files if "/" in f and not (ROOT / f).exists())
    for m in missing:
        print(f"not in the code map: {m}")
    for f in dangling:
        print(f"named in the code map but missing: {f}")
    return 1 if missing or dangling else 0


if __name__ == "__main__":
    sys.exit(main())
