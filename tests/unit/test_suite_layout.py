"""The suite's own layout: pytest's default ("prepend") import mode imports test modules by
basename, so two test files of one name in different folders stop collection of the whole suite,
which only a full run shows. Catch it here, in any run of tests/unit."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique_across_folders() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if path.name.startswith("test_"):
            by_name[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not clashes, f"test modules share a basename (rename one): {clashes}"
