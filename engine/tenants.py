"""API keys and tenants of the engine: who may call /v1, and whose prefix-cache chain a request uses.

As vLLM and OpenAI do, the engine takes `Authorization: Bearer KEY` on /v1 routes; /health and
/metrics stay open (vLLM's rule). Several keys may be configured (`--api-key` repeated, or a key
file of `KEY [TENANT]` lines); each key belongs to a tenant, named in the file or `key-<8 hex of
its SHA-256>`. Metrics carry the tenant's name, never a key, so the label set is bounded by the
configured keys.

Cache salts (vLLM's `cache_salt`) seed the first block's hash (`kvcache.hashing.salted_seed`).
With `salt_per_key`, every tenant gets its own salt, derived from its name (keys of one tenant
share its cache, so rotating a key keeps it) or, for an unnamed key, from the key's hash; a
request's own `cache_salt` is appended, so a tenant can split its cache further but never reach
another tenant's chains. Derived salts start with a NUL byte, which request salts may not hold,
so no request salt (on this engine or on another one sharing the store) can equal one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

DEFAULT = "default"  # the tenant of every request when no keys are configured
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
KEY_ENV = "CHAINFS_ENGINE_API_KEY"  # as vLLM reads VLLM_API_KEY


@dataclass(frozen=True)
class Tenant:
    name: str     # the metric label
    ident: str    # what its derived salt is made of (never shown)


ANONYMOUS = Tenant(DEFAULT, DEFAULT)


class Unauthorized(PermissionError):
    """No key, or not a configured one: HTTP 401 in OpenAI's error shape."""


class Tenants:
    """The configured keys (none: every request is the default tenant) and the salt rule."""

    def __init__(self, keys: dict[str, str | None] | None = None, salt_per_key: bool = False) -> None:
        self._by_digest: dict[bytes, Tenant] = {}
        for key, name in (keys or {}).items():
            if not key or any(c.isspace() for c in key):
                raise ValueError("an API key must be a non-empty string without spaces")
            digest = hashlib.sha256(key.encode()).digest()
            if name is None:
                tenant = Tenant(f"key-{digest.hex()[:8]}", f"key:{digest.hex()}")
            elif _NAME.fullmatch(name):
                tenant = Tenant(name, f"name:{name}")
            else:
                raise ValueError(f"tenant names are 1-64 of A-Z a-z 0-9 _ . -, got {name!r}")
            self._by_digest[digest] = tenant
        self.salt_per_key = salt_per_key
        if salt_per_key and not self._by_digest:
            raise ValueError("a cache salt per key needs API keys (--api-key or --api-key-file)")

    @classmethod
    def from_options(cls, api_keys: Iterable[str] = (), key_file: str | None = None,
                     salt_per_key: bool = False) -> "Tenants":
        keys: dict[str, str | None] = {k: None for k in api_keys}
        if not keys and os.environ.get(KEY_ENV):
            keys[os.environ[KEY_ENV]] = None
        if key_file:
            keys.update(read_key_file(Path(key_file)))
        return cls(keys, salt_per_key)

    @property
    def required(self) -> bool:
        return bool(self._by_digest)

    @property
    def names(self) -> list[str]:
        return sorted({t.name for t in self._by_digest.values()})

    def authenticate(self, authorization: str | None) -> Tenant:
        """The caller's tenant from an `Authorization` header; Unauthorized if it has none."""
        if not self.required:
            return ANONYMOUS
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("Missing API key: send `Authorization: Bearer KEY`.")
        # Looked up by the key's hash: the dict compares digests, not the secret itself.
        tenant = self._by_digest.get(hashlib.sha256(key.strip().encode()).digest())
        if tenant is None:
            raise Unauthorized("Incorrect API key provided.")  # never echo the key
        return tenant

    def salt(self, tenant: Tenant, request_salt: str | None) -> str | None:
        """The salt a request's block keys are seeded with."""
        if not self.salt_per_key:
            return request_salt
        derived = hashlib.sha256(f"chainfs-engine-tenant\0{tenant.ident}".encode()).hexdigest()
        return f"\0{derived}\0{request_salt or ''}"


def read_key_file(path: Path) -> dict[str, str | None]:
    """`KEY [TENANT]` per line; blank lines and `#` comments are skipped."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by others (mode %o): keep API keys at mode 0600", path, mode & 0o777)
    keys: dict[str, str | None] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise ValueError(f"{path}:{number}: expected `KEY [TENANT]`")
        keys[words[0]] = words[1] if len(words) == 2 else None
    if not keys:
        raise ValueError(f"{path} holds no API key")
    return keys
