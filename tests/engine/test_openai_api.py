"""The engine through the official `openai` package and raw HTTP: completions and chat, streamed
and not, n, stop, logprobs, seeds, lists of prompts, /v1/models, errors, and SSE framing."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any, Callable

EngineProc = Any  # conftest.EngineProc: a `chainfs engine serve` process

from urllib.request import urlopen

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chainfs.cluster.process import wait_for



pytestmark = pytest.mark.integration

PROMPT = "The KV cache of a shared prefix lives on chainfs; " * 4  # 200 bytes = 200 tokens
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": PROMPT}]


@pytest.fixture()
def engine(start_engine: Callable[..., EngineProc], tmp_path: Path) -> EngineProc:
    return start_engine(f"file://{tmp_path}/kv", "--block-tokens", "16")


def client_of(engine: EngineProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{engine.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_completions_sync_and_stream_agree(engine: EngineProc) -> None:
    c = client_of(engine)
    prompts = [PROMPT, "another prompt"]
    sync = c.completions.create(model="tiny", prompt=prompts, max_tokens=6, n=2, logprobs=2)
    assert [ch.index for ch in sync.choices] == [0, 1, 2, 3]
    assert all(ch.finish_reason == "length" for ch in sync.choices)
    assert sync.choices[0].text == sync.choices[1].text, "greedy choices of one prompt differ"
    assert sync.usage.prompt_tokens == 200 + len("another prompt")  # a prompt counts once, n or not
    assert sync.usage.completion_tokens == 4 * 6
    lp = sync.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    for tok, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert value <= 0 and len(top) == 2 and max(top.values()) == pytest.approx(value), "greedy takes the top-1"

    stream = c.completions.create(model="tiny", prompt=prompts, max_tokens=6, n=2, stream=True,
                                  stream_options={"include_usage": True})
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    chunks = list(stream)
    for ch in chunks[:-1]:
        assert ch.usage is None and len(ch.choices) == 1
        texts[ch.choices[0].index] = texts.get(ch.choices[0].index, "") + ch.choices[0].text
        if ch.choices[0].finish_reason:
            finish[ch.choices[0].index] = ch.choices[0].finish_reason
    assert texts == {ch.index: ch.text for ch in sync.choices}
    assert finish == {0: "length", 1: "length", 2: "length", 3: "length"}
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == 24
    assert last.usage.prompt_tokens == sync.usage.prompt_tokens


def test_chat_sync_and_stream_report_cached_tokens(engine: EngineProc) -> None:
    c = client_of(engine)
    first = c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5)
    msg = first.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str)
    assert first.object == "chat.completion" and first.model == "tiny"
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert first.usage.model_extra["prompt_cache_miss_tokens"] == first.usage.prompt_tokens
    engine.wait_stored()  # stores are write-behind

    stream = c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5, stream=True,
                                       stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert content == msg.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] in ("length", "stop")
    usage = chunks[-1].usage
    cached = usage.prompt_tokens_details.cached_tokens
    # the template renders the same bytes again, so every full 16-token block of prompt[:-1] hits
    assert cached == (usage.prompt_tokens - 1) // 16 * 16 > 0
    assert usage.model_extra["prompt_cache_hit_tokens"] == cached
    assert usage.model_extra["prompt_cache_miss_tokens"] == usage.prompt_tokens - cached


def test_stop_strings_end_the_choice_before_the_match(engine: EngineProc) -> None:
    c = client_of(engine)
    free = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=24)
    ids = free.choices[0].model_extra["token_ids"]
    # the first ASCII token that did not occur before it: stopping on it keeps exactly what precedes it
    at = next(i for i in range(1, len(ids)) if ids[i] < 128 and ids[i] not in ids[:i])
    stop = chr(ids[at])
    want = bytes(ids[:at]).decode("utf-8", errors="replace")
    stopped = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=24, stop=[stop, "never-seen"])
    assert stopped.choices[0].finish_reason == "stop" and stopped.choices[0].text == want
    streamed = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=24, stop=stop, stream=True)
    parts = list(streamed)
    assert "".join(p.choices[0].text for p in parts) == want
    assert parts[-1].choices[0].finish_reason == "stop"


def test_sampling_seed_and_top_p(engine: EngineProc) -> None:
    c = client_of(engine)
    greedy = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=12).choices[0].text

    def sample(**kw: object) -> str:
        return c.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=1.5, **kw).choices[0].text

    assert sample(seed=7) == sample(seed=7)
    assert sample(seed=7) != sample(seed=8)
    assert sample(seed=3, top_p=1e-9) == greedy, "a nucleus of one token is greedy"


def test_models_and_errors_in_openai_shape(engine: EngineProc) -> None:
    c = client_of(engine)
    models = c.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert c.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError) as exc:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert exc.value.status_code == 404 and exc.value.code == "model_not_found"
    assert "gpt-4o" in exc.value.message
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-4o")
    with pytest.raises(openai.BadRequestError) as bad:
        c.completions.create(model="tiny", prompt=PROMPT, max_tokens=4, n=0)
    assert bad.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="tiny", messages=[{"role": "wizard", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="tiny", prompt=PROMPT, max_tokens=5000)


def test_sse_framing(engine: EngineProc) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=60)
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "stream": True,
            "stream_options": {"include_usage": True}}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    raw = resp.read().decode()
    conn.close()
    assert raw.endswith("data: [DONE]\n\n")
    events = raw.split("\n\n")[:-1]
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert all(p["object"] == "chat.completion.chunk" and p["id"] == payloads[0]["id"] for p in payloads)
    assert all(p["usage"] is None for p in payloads[:-1])
    usage = payloads[-1]["usage"]
    assert payloads[-1]["choices"] == [] and usage["completion_tokens"] == 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + 4
    assert set(usage) >= {"prompt_tokens_details", "prompt_cache_hit_tokens", "prompt_cache_miss_tokens"}
    assert "ttft_ms" in payloads[-1]["timings"]


def test_a_client_that_goes_away_stops_the_generation(engine: EngineProc) -> None:
    """Closing a stream mid-way ends the engine call at the next token (counted as an abort)."""
    body = json.dumps({"prompt": PROMPT, "max_tokens": 800, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", engine.port), timeout=60) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        got = b""
        while b"data: " not in got:
            got += sock.recv(4096)

    def aborted() -> float:
        for family in text_string_to_metric_families(urlopen(f"{engine.url}/metrics", timeout=10).read().decode()):
            for s in family.samples:
                if s.name == "vllm:request_success_total" and s.labels.get("finished_reason") == "abort":
                    return s.value
        return 0.0

    wait_for(lambda: aborted() == 1, 60, "the engine to notice the client left")
    generated = [s.value for f in text_string_to_metric_families(urlopen(f"{engine.url}/metrics").read().decode())
                 for s in f.samples if s.name == "vllm:generation_tokens_total"]
    assert generated[0] < 800, "the engine generated the whole answer for nobody"
    assert client_of(engine).models.list().data, "the engine still serves"
