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
    serve.add_argument("--api-key", action="append", default=[], metavar="KEY",
                       help="accept this Bearer key (repeatable; also $CHAINFS_ENGINE_API_KEY); with any key, "
                            "every /v1 route needs one (401 otherwise); /health and /metrics stay open")
    serve.add_argument("--api-key-file", metavar="FILE",
                       help="accept the keys of this file: `KEY [TENANT]` per line (keys of one TENANT share "
                            "its cache and metrics label); keep it at mode 0600")
    serve.add_argument("--salt-per-key", action="store_true",
                       help="derive each request's KV cache salt from its tenant (its key, or the key file's "
                            "TENANT): tenants never hit each other's blocks")
    serve.add_argument("--max-http-threads", type=int, default=64, metavar="N",
                       help="connections served at once (default 64); more wait in the backlog, then get 503")
    serve.add_argument("--http-queue-timeout", type=float, default=10.0, metavar="S",
                       help="how long a connection waits for a free thread before its 503 (default 10)")
    serve.add_argument("--http-idle-timeout", type=float, default=30.0, metavar="S",
                       help="close a connection that sends nothing for S seconds (default 30)")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from chainfs.engine.server import build_engine, serve  # numpy loads only for this command
    from chainfs.engine.tenants import Tenants

    if args.block_tokens <= 0:
        raise ValueError("--block-tokens must be positive")
    logging.getLogger("chainfs").setLevel(logging.DEBUG if args.debug else logging.INFO)
    if args.kv_store_wait < 0:
        raise ValueError("--kv-store-wait must be >= 0")
    if args.max_http_threads < 1 or args.http_idle_timeout <= 0 or args.http_queue_timeout < 0:
        raise ValueError("--max-http-threads must be >= 1, --http-idle-timeout > 0, --http-queue-timeout >= 0")
    tenants = Tenants.from_options(args.api_key, args.api_key_file, args.salt_per_key)
    engine = build_engine(args.model, args.cache, args.block_tokens, args.capacity or None, args.kv_store_wait)
    serve(engine, args.host, args.port, args.served_model_name, tenants=tenants,
          max_threads=args.max_http_threads, idle_timeout=args.http_idle_timeout,
          queue_timeout=args.http_queue_timeout)
    return 0
