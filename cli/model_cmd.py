"""`chainfs model build-tiny DIR`: a local model and tokenizer for vLLM (needs the vllm extra)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="local models for the vLLM integration")
    msub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    build = msub.add_parser("build-tiny", help="a Llama model with random weights and a BPE tokenizer")
    build.add_argument("dir", help="output directory (created)")
    build.add_argument("--size", choices=["tiny", "medium"], default="tiny",
                       help="tiny: 2 layers, hidden 128; medium: 8 layers, hidden 1024 (~120 M parameters)")
    build.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                       help="the weights' type in the saved model")
    build.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    build.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    from importlib.util import find_spec

    from chainfs.integrations.hf_model import build_model

    missing = [m for m in ("torch", "transformers", "tokenizers") if find_spec(m) is None]
    if missing:
        raise RuntimeError(f"build-tiny needs {', '.join(missing)}: run `make vllm-setup`, then "
                           f"use .venv-vllm/bin/chainfs")
    out = build_model(args.dir, args.size, args.dtype, args.seed)
    print(f"wrote {args.size} model to {out}")
    return 0
