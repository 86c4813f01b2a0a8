"""Regenerate the Python modules of proto/*.proto; `--check` fails when they are stale.

The .proto files are staged under chainfs/proto/ so that generated imports read
`from chainfs.proto import x_pb2`, matching the installed package layout.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent.parent / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


def generate(out_dir: Path) -> list[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "chainfs" / "proto"
        staged.mkdir(parents=True)
        sources = sorted(PROTO_DIR.glob("*.proto"))
        for src in sources:
            shutil.copy(src, staged / src.name)
        gen_root = Path(tmp) / "out"
        gen_root.mkdir()
        args = [
            "grpc_tools.protoc",
            f"-I{tmp}",
            f"--python_out={gen_root}",
            f"--pyi_out={gen_root}",
            f"--grpc_python_out={gen_root}",
            *[f"chainfs/proto/{s.name}" for s in sources],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        produced = []
        for path in sorted((gen_root / "chainfs" / "proto").iterdir()):
            target = out_dir / path.name
            shutil.copy(path, target)
            produced.append(target)
        return produced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated files are stale")
    args = parser.parse_args()
    if not args.check:
        for old in PROTO_DIR.iterdir():
            if old.name.endswith(GENERATED_SUFFIXES):
                old.unlink()
        for path in generate(PROTO_DIR):
            print(f"wrote {path.relative_to(PROTO_DIR.parent)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name for p in generate(Path(tmp))}
        existing = {p.name for p in PROTO_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
        stale = sorted(fresh ^ existing)
        stale += sorted(
            n for n in fresh & existing if not filecmp.cmp(Path(tmp) / n, PROTO_DIR / n, shallow=False)
        )
    if stale:
        print("generated protobuf modules are stale; run `make proto`: " + ", ".join(stale), file=sys.stderr)
        return 1
    print("generated protobuf modules are fresh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
