"""The engine's HTTP server: OpenAI's completions, chat and models API, Prometheus metrics, health.

HTTP stack: Werkzeug (Pallets; pure Python, one small dependency). It gives request/response
objects, routing, HTTP errors and a threaded server, and its test client drives the app without
sockets. The engine is CPU-bound numpy that computes one request at a time, so an async stack
would buy nothing; WSGI keeps handlers plain functions.

Limits: a body over 8 MiB is 413; bad values, malformed or too deeply nested JSON are 400, all in
OpenAI's error shape; connections are served by a bounded pool of threads (`httpserver`). With
API keys every /v1 route needs `Authorization: Bearer KEY` (401 otherwise); /health and /metrics
stay open, as in vLLM. Keys and KV salts per tenant: `tenants`.

Routes: POST /v1/completions, POST /v1/chat/completions (both stream as server-sent events with
`stream: true`), GET /v1/models[/ID], GET /metrics, GET /health. Handlers only translate HTTP; the
rules live in `api` (validation), `generate` (choices, stop, logprobs, streaming),
`openai_format` (reply shapes) and `service` (the engine).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from chainfs.engine import generate, openai_format, registry
from chainfs.engine.api import BadRequest, GenerationRequest, ModelNotFound, parse_chat, parse_completion
from chainfs.engine.cache import CacheHandle, namespace_for
from chainfs.engine.httpserver import (DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_THREADS, DEFAULT_QUEUE_TIMEOUT,
                                      BoundedWSGIServer)
from chainfs.engine.metrics import EngineMetrics
from chainfs.engine.model import Transformer
from chainfs.engine.presets import get_preset
from chainfs.engine.service import Engine
from chainfs.engine.tenants import ANONYMOUS, Tenants, Unauthorized

log = logging.getLogger(__name__)
MAX_BODY = 8 << 20


class EngineApp:
    """The WSGI application of one engine; `served_name` is the model id clients send and see."""

    def __init__(self, engine: Engine, served_name: str | None = None, tenants: Tenants | None = None) -> None:
        self.engine = engine
        self.tenants = tenants or Tenants()
        self.model = served_name or engine.config.name
        self.metrics = EngineMetrics(self.model, engine.cache)
        self.url_map = Map([
            Rule("/v1/completions", endpoint="completions", methods=["POST"]),
            Rule("/v1/chat/completions", endpoint="chat", methods=["POST"]),
            Rule("/v1/models", endpoint="models", methods=["GET"]),
            Rule("/v1/models/<path:model>", endpoint="model", methods=["GET"]),
            Rule("/metrics", endpoint="metrics", methods=["GET"]),
            Rule("/health", endpoint="health", methods=["GET"]),
        ])

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = MAX_BODY
        try:
            if request.path.startswith("/v1/"):  # before reading the body: strangers cost nothing
                environ["chainfs.tenant"] = self.tenants.authenticate(request.headers.get("Authorization"))
            endpoint, values = self.url_map.bind_to_environ(environ).match()
            response = getattr(self, f"on_{endpoint}")(request, **values)
        except Unauthorized as exc:
            response = self._error(401, str(exc), "invalid_request_error", code="invalid_api_key")
            response.headers["WWW-Authenticate"] = "Bearer"
        except BadRequest as exc:
            response = self._error(400, str(exc), "invalid_request_error", exc.param)
        except ModelNotFound as exc:
            response = self._error(404, str(exc), "invalid_request_error", "model", "model_not_found")
        except HTTPException as exc:
            response = self._error(exc.code or 500, exc.description or exc.name, "invalid_request_error")
        except Exception as exc:  # noqa: BLE001 - one bad request must never take the server down
            log.exception("request failed")
            response = self._error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
        return response(environ, start_response)

    def _error(self, status: int, message: str, kind: str, param: str | None = None,
               code: str | int | None = None) -> Response:
        self.metrics.errors.labels(self.model, str(status)).inc()
        return _json(openai_format.error(message, kind, param, status if code is None else code), status)

    def on_completions(self, request: Request) -> Response:
        return self._generate(request, parse_completion(request.get_data(), self.engine.config, self.model))

    def on_chat(self, request: Request) -> Response:
        return self._generate(request, parse_chat(request.get_data(), self.engine.config, self.model))

    def _generate(self, request: Request, req: GenerationRequest) -> Response:
        tenant = request.environ.get("chainfs.tenant", ANONYMOUS)
        req = dataclasses.replace(req, tenant=tenant.name, cache_salt=self.tenants.salt(tenant, req.cache_salt))
        rid, created = openai_format.new_id(req), int(time.time())
        if req.stream:
            return Response(self._events(req, rid, created), content_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        results = generate.run(self.engine, req, lambda delta: None, lambda: self.metrics.track(req.tenant))
        return _json(openai_format.body(req, results, rid, created))

    def _events(self, req: GenerationRequest, rid: str, created: int) -> Iterator[bytes]:
        """The SSE stream: chunks per choice, the usage chunk if asked, then `data: [DONE]`."""
        opened: set[int] = set()
        events = generate.stream(self.engine, req, lambda: self.metrics.track(req.tenant))
        try:
            for item in events:
                if isinstance(item, generate.Delta):
                    first = item.index not in opened
                    opened.add(item.index)
                    yield openai_format.sse(openai_format.chunk(req, item, rid, created, first))
                elif req.include_usage:
                    yield openai_format.sse(openai_format.usage_chunk(req, item, rid, created))
        except Exception as exc:  # noqa: BLE001 - headers are gone: report in the stream, as vLLM does
            log.exception("stream failed")
            yield openai_format.sse(openai_format.error(f"{type(exc).__name__}: {exc}", "server_error", code=500))
        finally:
            events.close()
        yield openai_format.sse("[DONE]")

    def on_models(self, request: Request) -> Response:
        return _json(openai_format.models(self.model, self.engine.config.max_context))

    def on_model(self, request: Request, model: str) -> Response:
        if model != self.model:
            raise ModelNotFound(model)
        return _json(openai_format.model_card(self.model, self.engine.config.max_context))

    def on_metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), content_type=CONTENT_TYPE_LATEST)

    def on_health(self, request: Request) -> Response:
        cache = self.engine.cache
        info: dict[str, Any] = {"status": "ok", "model": self.model, "cache": None}
        if cache is not None:
            info["cache"] = {"url": cache.url, "open": cache.get() is not None,
                             "block_tokens": cache.namespace.block_tokens, "stats": cache.stats()}
        if self.engine.writer is not None:
            info["write_behind"] = self.engine.writer.stats.snapshot()
        return _json(info)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def build_engine(model: str, cache_url: str | None, block_tokens: int = 64,
                 capacity_bytes: int | None = None, store_wait_s: float = 5.0) -> Engine:
    config = get_preset(model)
    cache = None
    if cache_url and cache_url != "none":
        cache = CacheHandle(cache_url, namespace_for(config, block_tokens), capacity_bytes)
        cache.get()  # open now if the store is there; otherwise retried per request
    return Engine(Transformer(config), cache, store_wait_s=store_wait_s)


def make_engine_server(engine: Engine, host: str = "127.0.0.1", port: int = 0,
                       served_name: str | None = None, tenants: Tenants | None = None,
                       max_threads: int = DEFAULT_MAX_THREADS,
                       idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                       queue_timeout: float = DEFAULT_QUEUE_TIMEOUT) -> BoundedWSGIServer:
    """An HTTP server of at most `max_threads` connection threads bound to (host, port); port 0
    picks a free one (`server.port`)."""
    app = EngineApp(engine, served_name, tenants)
    server = BoundedWSGIServer(host, port, app, max_threads, idle_timeout, queue_timeout)
    app.metrics.watch_http(server)
    return server


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 0, served_name: str | None = None,
          drain_timeout: float = 5.0, tenants: Tenants | None = None, max_threads: int = DEFAULT_MAX_THREADS,
          idle_timeout: float = DEFAULT_IDLE_TIMEOUT, queue_timeout: float = DEFAULT_QUEUE_TIMEOUT) -> None:
    """Serves until SIGTERM/SIGINT, then writes the queued KV blocks within `drain_timeout`."""
    server = make_engine_server(engine, host, port, served_name, tenants, max_threads, idle_timeout, queue_timeout)
    log.info("chainfs engine (%s) serving on http://%s:%d", engine.config.name, host, server.port)
    withdraw = registry.announce(engine.cache.url if engine.cache else None, f"http://{host}:{server.port}",
                                 served_name or engine.config.name)

    def stop(signum: int, frame: Any) -> None:  # shutdown() waits for serve_forever: not on its thread
        threading.Thread(target=server.shutdown, name="engine-shutdown", daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever()
    finally:
        server.server_close()
        withdraw()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        drained = engine.close(drain_timeout)
        log.info("engine stopped (KV write-behind %s)", "drained" if drained else "NOT drained by the deadline")
