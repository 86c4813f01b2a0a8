"""`chainfs bench kv`: the KV path on chainfs beside file://, Redis and Mooncake Store (kvcache/bench.py)."""

from __future__ import annotations

import argparse


def register(bsub: argparse._SubParsersAction) -> None:
    kv = bsub.add_parser("kv", help="KV block store, lookup and load on chainfs beside file://, Redis and "
                                    "Mooncake Store", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    kv.add_argument("--json", metavar="FILE", help="write the results as JSON here too")
    kv.add_argument("--reps", type=int, default=5, help="repetitions per figure (medians are reported)")
    kv.add_argument("--backends", default="chainfs,chainfs-sc,file,redis,mooncake",
                    help="comma-separated subset of chainfs, chainfs-sc, file, redis, mooncake")
    kv.add_argument("--sizes", default="16k,512k,engine", help="comma-separated subset of 16k, 512k, engine")
    kv.add_argument("--no-fsync", action="store_true", help="storage nodes skip fsync (not crash-safe)")
    kv.set_defaults(func=cmd_kv)


def cmd_kv(args: argparse.Namespace) -> int:
    from chainfs.kvcache import bench  # numpy and the peers load only for this command

    bench.run(reps=args.reps, json_path=args.json, backends=_list(args.backends), sizes=_list(args.sizes),
              fsync=not args.no_fsync)
    return 0


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]
