"""ChainfsConnector in real vLLM servers (CPU build, the tiny model) over a real chainfs cluster.

Three servers start together: A and B with the connector on one chainfs store, R without it (the
reference outputs). B is fresh for every prompt it is sent: what it reports as cached can only come
from blocks A wrote into chainfs. Prompts differ per test, so vLLM's own prefix cache never
answers for chainfs. The last test stops the cluster.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import pytest

from chainfs.cluster import LocalCluster
from chainfs.cluster.process import wait_for
from chainfs.integrations.vllm_server import VLLMServer, connector_config, start_servers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # the first test waits for 3 starts
BLOCK = 128  # vLLM's CPU block size
VOCAB = 4000  # below the tiny model's vocabulary


class Servers:
    def __init__(self, cluster: LocalCluster, a: VLLMServer, b: VLLMServer, r: VLLMServer, stats: Path) -> None:
        self.cluster, self.a, self.b, self.r, self.stats_a = cluster, a, b, r, stats


@pytest.fixture(scope="module")
def servers(tiny_model: Path, vllm_py: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("vllm")
    with LocalCluster(root / "cluster", storage_nodes=3, replicas=3) as cluster:
        url = f"{cluster.url}/kv"
        stats = root / "a-stats.json"
        specs = {"a": connector_config(url, stats_path=str(stats)), "b": connector_config(url), "r": None}
        with ExitStack() as stack:
            a, b, r = start_servers(stack, 3, tiny_model, root, [specs["a"], specs["b"], specs["r"]],
                                    python=vllm_py, single_process=True)
            yield Servers(cluster, a, b, r, stats)


def prompt(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(10, VOCAB) for _ in range(n)]


def summary(resp: dict[str, Any]) -> dict[str, Any]:
    choice = resp["choices"][0]
    details = resp["usage"].get("prompt_tokens_details") or {}
    return {"tokens": choice["token_ids"], "logprobs": choice["logprobs"]["token_logprobs"],
            "cached": details.get("cached_tokens", 0), "chainfs": (resp.get("kv_transfer_params") or {}).get("chainfs")}


def saved_blocks(stats: Path) -> int:
    try:
        return int(json.loads(stats.read_text())["write_behind"]["stored_blocks"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def complete_and_wait_saved(s: Servers, p: list[int], blocks: int, salt: str | None = None) -> dict[str, Any]:
    """A computes `p`; returns once its saver has written the prompt's `blocks` full blocks."""
    before = saved_blocks(s.stats_a)
    out = summary(s.a.complete(p, cache_salt=salt))
    wait_for(lambda: saved_blocks(s.stats_a) >= before + blocks, 60, "A to save its blocks to chainfs")
    return out


def assert_same_outputs(got: dict[str, Any], ref: dict[str, Any]) -> None:
    assert got["tokens"] == ref["tokens"]
    assert got["logprobs"] == pytest.approx(ref["logprobs"], abs=1e-5)


def test_fresh_instance_gets_cached_tokens_from_chainfs_with_equal_outputs(servers: Servers) -> None:
    """B is asked right after A answered (as a conversation's next turn may be): A's answer waited
    until its blocks were in chainfs, so B finds them all."""
    p = prompt(5 * BLOCK + 40, seed=1)
    before = saved_blocks(servers.stats_a)
    first = summary(servers.a.complete(p))
    second = summary(servers.b.complete(p))
    assert first["cached"] == 0 and first["chainfs"]["loaded_tokens"] == 0 and first["chainfs"]["save_wait_ms"] >= 0
    ref = summary(servers.r.complete(p))
    assert second["cached"] == 5 * BLOCK
    got = {k: second["chainfs"][k] for k in ("local_tokens", "external_tokens", "loaded_tokens")}
    assert got == {"local_tokens": 0, "external_tokens": 5 * BLOCK, "loaded_tokens": 5 * BLOCK}
    assert second["chainfs"]["save_wait_ms"] == 0  # it loaded every block: nothing of its own to save
    wait_for(lambda: saved_blocks(servers.stats_a) >= before + 5, 10, "A's saver counters")
    assert ref["cached"] == 0 and ref["chainfs"] is None
    assert_same_outputs(second, ref)
    assert_same_outputs(first, ref)


def test_prompt_sharing_a_prefix_loads_only_the_whole_shared_blocks(servers: Servers) -> None:
    base = prompt(4 * BLOCK + 10, seed=2)
    complete_and_wait_saved(servers, base, 4)
    shared = 2 * BLOCK + 70  # two whole blocks and part of a third in common
    q = base[:shared] + prompt(300, seed=3)
    got = summary(servers.b.complete(q))
    assert got["cached"] == 2 * BLOCK
    assert got["chainfs"]["loaded_tokens"] == 2 * BLOCK
    assert_same_outputs(got, summary(servers.r.complete(q)))


def test_different_cache_salts_never_hit_each_other(servers: Servers) -> None:
    p = prompt(3 * BLOCK + 5, seed=4)
    complete_and_wait_saved(servers, p, 3, salt="tenant-a")
    other = summary(servers.b.complete(p, cache_salt="tenant-b"))
    plain = summary(servers.b.complete(p))
    assert other["cached"] == 0 and other["chainfs"]["loaded_tokens"] == 0
    assert plain["cached"] == 0 and plain["chainfs"]["loaded_tokens"] == 0
    same = summary(servers.b.complete(p, cache_salt="tenant-a"))  # the same tenant on B does hit
    assert same["cached"] == 3 * BLOCK and same["chainfs"]["loaded_tokens"] == 3 * BLOCK
    ref = summary(servers.r.complete(p))
    for got in (other, plain, same):
        assert_same_outputs(got, ref)


def test_store_down_gives_misses_and_correct_outputs(servers: Servers) -> None:
    stored = prompt(3 * BLOCK + 20, seed=5)
    complete_and_wait_saved(servers, stored, 3)  # in chainfs, never seen by B
    servers.cluster.stop()
    t0 = time.monotonic()
    for p in (stored, prompt(2 * BLOCK + 7, seed=6)):
        got = summary(servers.b.complete(p, timeout=120))
        assert got["cached"] == 0 and got["chainfs"]["loaded_tokens"] == 0
        assert_same_outputs(got, summary(servers.r.complete(p)))
    assert time.monotonic() - t0 < 120
