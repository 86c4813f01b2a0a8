"""`chainfs user add`: tokens for the users of a cluster (docs/security.md, "Authentication")."""

from __future__ import annotations

import argparse
from pathlib import Path

from chainfs.cli.targets import UsageError
from chainfs.cluster import auth_files
from chainfs.common import auth


def register(sub: argparse._SubParsersAction) -> None:
    user = sub.add_parser("user", help="issue user tokens of a local cluster")
    usub = user.add_subparsers(dest="user_command", metavar="COMMAND", required=True)
    add = usub.add_parser("add", help="print a new user token signed with the cluster's secret "
                                      "(give it to the user as a token file: --token-file / $CHAINFS_TOKEN_FILE)")
    add.add_argument("name", help="the user's name (appears in refusals and logs)")
    add.add_argument("--dir", required=True, help="the directory given to `cluster up` (holds auth/secret)")
    add.add_argument("--root", action="store_true", help="a cluster admin: any path, fsck, admin RPCs")
    add.add_argument("--prefix", default="", help="limit the token to this subtree (e.g. /teams/a)")
    add.add_argument("--ttl", type=float, default=None, help="seconds until the token expires (default: never)")
    add.set_defaults(func=cmd_add)


def cmd_add(args: argparse.Namespace) -> int:
    if args.root and args.prefix:
        raise UsageError("--root and --prefix exclude each other (a root token reaches every path)")
    if args.ttl is not None and args.ttl <= 0:
        raise UsageError(f"--ttl must be > 0, got {args.ttl}")
    secret = auth_files.load_secret(Path(args.dir))
    try:
        token = auth.issue(secret, "user", args.name, root=args.root, prefix=args.prefix, ttl=args.ttl)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(token)
    return 0
