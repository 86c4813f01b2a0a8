"""Engines that report to the cluster: a small JSON file per engine under /.chainfs/engines.

An engine whose KV cache is on chainfs announces itself when it starts serving (its HTTP URL,
model and pid) and withdraws when it stops, so `chainfs top chainfs://HOST:PORT` can find every
engine of the cluster and show their KV hit rates from their /metrics. Best effort: an engine
that cannot write its file still serves (the failure is logged), and a reader skips files that
are unreadable or whose engine no longer answers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

REGISTRY_DIR = "/.chainfs/engines"


def _client(address: str) -> Any:
    from chainfs.client import ChainClient

    return ChainClient(address, retry_deadline=5.0)


def announce(cache_url: str | None, engine_url: str, model: str) -> Callable[[], None]:
    """Writes this engine's record (in the background, so an unreachable cluster delays nothing)
    if its cache is on chainfs; returns what removes it again."""
    from chainfs.client.url import is_chainfs_url, parse_url

    if not cache_url or not is_chainfs_url(cache_url):
        return lambda: None
    address = parse_url(cache_url).address
    name = engine_url.split("://", 1)[-1].replace(":", "_").replace("/", "_").replace("[", "").replace("]", "")
    path = f"{REGISTRY_DIR}/{name}.json"
    record = {"url": engine_url, "model": model, "pid": os.getpid(), "cache": cache_url, "started": time.time()}
    written = threading.Event()

    def write() -> None:
        try:
            client = _client(address)
            try:
                client.mkdir(REGISTRY_DIR, parents=True)
            except FileExistsError:  # another engine made it first
                pass
            client.write_file(path, json.dumps(record).encode())
            written.set()
        except (OSError, ValueError) as exc:
            log.warning("could not announce the engine to %s: %s", address, exc)

    writer = threading.Thread(target=write, name="engine-announce", daemon=True)
    writer.start()

    def withdraw() -> None:
        writer.join(timeout=10)
        if not written.is_set():
            return
        try:
            _client(address).rm(path)
        except (OSError, ValueError) as exc:
            log.info("could not withdraw the engine's announcement %s: %s", path, exc)

    return withdraw


def engines(address: str) -> list[dict[str, Any]]:
    """The engines announced in a cluster (none if nobody announced)."""
    client = _client(address)
    try:
        entries = client.ls(REGISTRY_DIR)
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        try:
            out.append(json.loads(client.read_file(f"{REGISTRY_DIR}/{entry.name}")))
        except (OSError, ValueError) as exc:
            log.info("skipping engine record %s: %s", entry.name, exc)
    return out
