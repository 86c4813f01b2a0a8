"""Tenants of the engine: API keys (401), cache salts (no shared blocks), per-tenant hit counters,
and 400 for every bad value of a body. In-process through the WSGI app (Werkzeug's test client)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from werkzeug.test import Client

from chainfs.engine.api import MAX_DEPTH
from chainfs.engine.cache import CacheHandle, namespace_for
from chainfs.engine.model import Transformer
from chainfs.engine.server import EngineApp
from chainfs.engine.service import Engine
from chainfs.engine.tenants import Tenants, read_key_file

from test_engine_http import PROMPT, scrape

KEY_A, KEY_B, KEY_A2 = "sk-alpha-0001", "sk-bravo-0002", "sk-alpha-0003"


def make(model: Transformer, tenants: Tenants | None = None) -> Client:
    cache = CacheHandle(f"memory://kv-{uuid.uuid4().hex}", namespace_for(model.config, 16))
    return Client(EngineApp(Engine(model, cache), tenants=tenants))


def post(client: Client, body: dict, key: str | None = None, path: str = "/v1/completions") -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = client.post(path, json=body, headers=headers)
    writer = client.application.engine.writer
    assert writer is None or writer.drain(30), "write-behind did not drain"
    return r.status_code, r.json


def hits(reply: dict) -> int:
    return reply["usage"]["prompt_cache_hit_tokens"]


def test_missing_or_wrong_key_is_401_in_openai_shape(tiny_model: Transformer) -> None:
    client = make(tiny_model, Tenants({KEY_A: None, KEY_B: "bravo"}))
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": KEY_A},
                    {"Authorization": "Basic " + KEY_A}, {"Authorization": "Bearer "}):
        for method, path in (("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
                             ("GET", "/v1/models"), ("GET", "/v1/models/tiny")):
            r = client.open(path, method=method, json={"prompt": "hi"}, headers=headers)
            assert r.status_code == 401, (headers, path)
            err = r.json["error"]
            assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
            assert KEY_A not in err["message"] and "sk-wrong" not in err["message"]
            assert r.headers["WWW-Authenticate"] == "Bearer"
    for key in (KEY_A, KEY_B):  # several keys are accepted
        assert post(client, {"prompt": "hi", "max_tokens": 1}, key)[0] == 200
        assert client.get("/v1/models", headers={"Authorization": f"bearer {key}"}).status_code == 200
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
    assert scrape(client)[("chainfs_engine_http_errors_total", {"model_name": "tiny", "status": "401"})] == 20


def test_requests_with_different_cache_salts_never_share_blocks(tiny_model: Transformer) -> None:
    client = make(tiny_model)
    assert hits(post(client, {"prompt": PROMPT, "cache_salt": "tenant-a"})[1]) == 0
    assert hits(post(client, {"prompt": PROMPT, "cache_salt": "tenant-b"})[1]) == 0
    assert hits(post(client, {"prompt": PROMPT})[1]) == 0
    messages = [{"role": "user", "content": PROMPT}]
    assert hits(post(client, {"messages": messages, "cache_salt": "tenant-c"}, path="/v1/chat/completions")[1]) == 0
    assert hits(post(client, {"prompt": PROMPT, "cache_salt": "tenant-a"})[1]) == 192  # the same salt hits
    assert hits(post(client, {"messages": messages, "cache_salt": "tenant-c"}, path="/v1/chat/completions")[1]) > 0


def test_salt_per_key_isolates_tenants_and_counts_each(tiny_model: Transformer) -> None:
    client = make(tiny_model, Tenants({KEY_A: "alpha", KEY_A2: "alpha", KEY_B: None}, salt_per_key=True))
    assert hits(post(client, {"prompt": PROMPT}, KEY_A)[1]) == 0
    # Another tenant's identical prompt, even naming no salt or a salt of its own, misses ...
    assert hits(post(client, {"prompt": PROMPT}, KEY_B)[1]) == 0
    assert hits(post(client, {"prompt": PROMPT, "stream": False, "cache_salt": "x"}, KEY_B)[1]) == 0
    # ... while the owner hits, with either of its keys; its own cache_salt splits its cache further.
    assert hits(post(client, {"prompt": PROMPT}, KEY_A2)[1]) == 192
    assert hits(post(client, {"prompt": PROMPT, "cache_salt": "x"}, KEY_A)[1]) == 0
    assert hits(post(client, {"prompt": PROMPT, "cache_salt": "x"}, KEY_B)[1]) == 192
    m, text = scrape(client), client.get("/metrics").text
    bravo = Tenants({KEY_B: None}).names[0]
    assert bravo.startswith("key-") and len(bravo) == 12
    label = {"model_name": "tiny"}
    assert m[("chainfs_engine_tenant_prefix_cache_hits_total", {**label, "tenant": "alpha"})] == 192
    assert m[("chainfs_engine_tenant_prefix_cache_queries_total", {**label, "tenant": "alpha"})] == 600
    assert m[("chainfs_engine_tenant_prefix_cache_hits_total", {**label, "tenant": bravo})] == 192
    assert m[("chainfs_engine_tenant_prefix_cache_queries_total", {**label, "tenant": bravo})] == 600
    for key in (KEY_A, KEY_A2, KEY_B):
        assert key not in text


def test_key_file_and_tenant_rules(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"# keys of the engine\n{KEY_A} alpha\n\n{KEY_B}   # no name: key-<hash>\n")
    f.chmod(0o600)
    assert read_key_file(f) == {KEY_A: "alpha", KEY_B: None}
    tenants = Tenants.from_options([KEY_A2], str(f), salt_per_key=True)
    a = tenants.authenticate(f"Bearer {KEY_A}")
    b = tenants.authenticate(f"Bearer {KEY_B}")
    a2 = tenants.authenticate(f"Bearer {KEY_A2}")
    assert a.name == "alpha" and b.name.startswith("key-") and len({a.name, b.name, a2.name}) == 3
    salts = {tenants.salt(t, s) for t in (a, b, a2) for s in (None, "x")}
    assert len(salts) == 6 and all(s.startswith("\0") for s in salts)
    assert Tenants().salt(Tenants().authenticate(None), "x") == "x"  # without the option: the request's own
    for bad in ("KEY a b\n", "", "# only a comment\n"):
        f.write_text(bad)
        with pytest.raises(ValueError):
            read_key_file(f)
    with pytest.raises(ValueError):
        Tenants({"k": "bad name!"})
    with pytest.raises(ValueError):
        Tenants(salt_per_key=True)  # a salt per key needs keys


@pytest.mark.parametrize("body, param", [
    ({"prompt": "hi", "seed": -1}, "seed"),
    ({"prompt": "hi", "seed": 2**64}, "seed"),
    ({"prompt": "hi", "seed": "7"}, "seed"),
    ({"prompt": "hi", "model": {"a": 1}}, "model"),
    ({"prompt": "hi", "model": ["tiny"]}, "model"),
    ({"prompt": "hi", "max_tokens": 10**30}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": "5"}, "max_tokens"),
    ({"prompt": "hi", "n": 10**6}, "n"),
    ({"prompt": "hi", "temperature": "hot"}, "temperature"),
    ({"prompt": "hi", "top_p": [1]}, "top_p"),
    ({"prompt": "hi", "echo": "yes"}, "echo"),
    ({"prompt": "hi", "stream": 1}, "stream"),
    ({"prompt": "hi", "stream": True, "stream_options": {"include_usage": "yes"}}, "include_usage"),
    ({"prompt": "hi", "cache_salt": ""}, "cache_salt"),
    ({"prompt": "hi", "cache_salt": 5}, "cache_salt"),
    ({"prompt": "hi", "cache_salt": "s" * 257}, "cache_salt"),
    ({"prompt": "hi", "cache_salt": "a\0b"}, "cache_salt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": [2**40]}, "prompt"),
    ({"prompt": "hi", "stop": {"s": 1}}, "stop"),
])
def test_bad_values_are_400_naming_the_param(tiny_model: Transformer, body: dict, param: str) -> None:
    client = make(tiny_model)
    status, reply = post(client, body)
    assert status == 400, reply
    assert reply["error"]["type"] == "invalid_request_error" and reply["error"]["param"] == param


@pytest.mark.parametrize("raw", [
    "[" * 100_000 + "]" * 100_000,                                 # past the decoder's own guard
    '{"prompt": "hi", "x": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}",
    '{"prompt": "hi", "seed": 1' + "0" * 5000 + "}",               # past Python's int digit limit
    '{"prompt": "hi", "temperature": NaN}',
    '{"prompt": "hi", "max_tokens": Infinity}',
    '{"prompt": "\\ud800"}',
    "",
])
def test_hostile_json_is_400_and_the_engine_keeps_serving(tiny_model: Transformer, raw: str) -> None:
    client = make(tiny_model)
    r = client.post("/v1/chat/completions", data=raw, content_type="application/json")
    assert r.status_code == 400, r.json
    assert set(r.json["error"]) == {"message", "type", "param", "code"}
    assert post(client, {"prompt": "hi", "max_tokens": 1})[0] == 200


def test_messages_of_every_wrong_shape_are_400(tiny_model: Transformer) -> None:
    client = make(tiny_model)
    for messages in (None, [], "hi", [1], [{"role": ["user"], "content": "x"}], [{"role": "user", "content": 5}],
                     [{"role": "user", "content": [{"type": "image_url"}]}], [{"role": {}, "content": "x"}]):
        status, reply = post(client, {"messages": messages}, path="/v1/chat/completions")
        assert status == 400 and reply["error"]["param"] == "messages", (messages, reply)
    assert json.loads(client.get("/health").get_data())["status"] == "ok"
