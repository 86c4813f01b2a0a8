"""A cluster's identities on disk (`cluster up`, LocalCluster; docs/security.md, "Authentication").

`<cluster dir>/auth/` (mode 0700) holds `secret` (32 random bytes, mode 0600: the metaservers and
storage nodes verify every token with it), `NAME.token` for each server process (`meta`,
`storage-0`, ...: node tokens, each naming its process, so a node can only speak for itself) and
`root.token` (the root user token `cluster up` saves in the per-user credentials file, so the
machine's user reaches the cluster without passing anything).
"""

from __future__ import annotations

import os
from pathlib import Path

from chainfs.common import auth, credentials

AUTH_DIR = "auth"
SECRET = "secret"
ROOT_USER = "root"


def secret_path(root: Path) -> Path:
    return Path(root) / AUTH_DIR / SECRET


def _write_token(path: Path, token: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)


def ensure(root: Path) -> bytes:
    """The cluster's secret (made on first use) and its root user token file."""
    d = Path(root) / AUTH_DIR
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    secret = auth.create_secret(d / SECRET)
    root_file = d / f"{ROOT_USER}.token"
    if not root_file.exists():
        _write_token(root_file, auth.issue(secret, "user", ROOT_USER, root=True))
    return secret


def load_secret(root: Path) -> bytes:
    """The secret of the cluster in `root` (FileNotFoundError when it has none)."""
    return auth.load_secret(secret_path(root))


def root_token(root: Path) -> str:
    return auth.read_token_file(Path(root) / AUTH_DIR / f"{ROOT_USER}.token")


def server_args(root: Path, name: str) -> list[str]:
    """The flags of server process `name`: the secret, and its own node token."""
    secret = ensure(root)
    token_file = Path(root) / AUTH_DIR / f"{name}.token"
    if not token_file.exists():
        _write_token(token_file, auth.issue(secret, "node", name))
    return ["--secret-file", str(secret_path(root)), "--token-file", str(token_file)]


def publish(root: Path, addresses: list[str]) -> None:
    """The root token for these metaservers: in this process, and for every process of this user."""
    token = root_token(root)
    auth.register(addresses, token)
    credentials.save(addresses, token, root)


def withdraw(root: Path, addresses: list[str]) -> None:
    auth.forget(addresses)
    credentials.remove(addresses, root)
