"""`chainfs engine serve`: the numpy inference engine with its KV cache on chainfs (or `file`)."""

from __future__ import annotations

import argparse
import logging


def register(sub: argparse._SubParsersAction) -> None:
    engine = sub.add_parser("engine", help="the inference engine that keeps prefix KV on chainfs")
    esub = engine.add_subparsers(dest="engine_command", metavar="ACTION", required=True)
    serve = esub.add_parser("serve", help="serve the OpenAI API (completions, chat, models) over HTTP")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.add_argument("--port", type=int, required=True, help="HTTP port (0 picks a free one)")
    serve.add_argument("--model", choices=["tiny", "small"], default="tiny", help="model preset (engine/README.md)")
    serve.add_argument("--cache", default="none",
                       help="none, or a store URL: chainfs://HOST:PORT/dir, file:///dir, memory://dir")
    serve.add_argument("--block-tokens", type=int, default=64, help="tokens per KV block (default 64)")
    serve.add_argument("--capacity", type=int, default=0, help="store capacity in bytes (0 = unbounded)")
    serve.add_argument("--kv-store-wait", type=float, default=5.0, metavar="S",
                       help="seconds an answer may wait, after its last token and outside the compute lock, "
                            "for its new KV blocks to be stored (so the next turn finds them); 0: never wait")
    serve.add_argument("--served-model-name", default=None,
                       help="the model id of the OpenAI API (/v1/models; default: the preset's name)")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from chainfs.engine.server import build_engine, serve  # numpy loads only for this command

    if args.block_tokens <= 0:
        raise ValueError("--block-tokens must be positive")
    logging.getLogger("chainfs").setLevel(logging.DEBUG if args.debug else logging.INFO)
    if args.kv_store_wait < 0:
        raise ValueError("--kv-store-wait must be >= 0")
    engine = build_engine(args.model, args.cache, args.block_tokens, args.capacity or None, args.kv_store_wait)
    serve(engine, args.host, args.port, args.served_model_name)
    return 0
