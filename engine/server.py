"""The engine's HTTP server: OpenAI-shaped completions, Prometheus metrics, health.

HTTP stack: Werkzeug (Pallets; pure Python, one small dependency). It gives request/response
objects, routing, HTTP errors and a threaded server, and its test client drives the app without
sockets. The engine is CPU-bound numpy that computes one request at a time, so an async stack
would buy nothing; WSGI keeps handlers plain functions.

Routes: POST /v1/completions, GET /metrics, GET /health. Handlers only translate HTTP; the rules
live in `api` (validation, response shape) and `service` (the engine).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from chainfs.engine.api import BadRequest, completion_body, parse_completion
from chainfs.engine.cache import CacheHandle, namespace_for
from chainfs.engine.metrics import EngineMetrics
from chainfs.engine.model import Transformer
from chainfs.engine.presets import get_preset
from chainfs.engine.service import Engine

log = logging.getLogger(__name__)
MAX_BODY = 8 << 20


class EngineApp:
    """The WSGI application of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.metrics = EngineMetrics(engine.cache)
        self.url_map = Map([
            Rule("/v1/completions", endpoint="completions", methods=["POST"]),
            Rule("/metrics", endpoint="metrics", methods=["GET"]),
            Rule("/health", endpoint="health", methods=["GET"]),
        ])

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = MAX_BODY
        try:
            endpoint, _ = self.url_map.bind_to_environ(environ).match()
            response = getattr(self, f"on_{endpoint}")(request)
        except BadRequest as exc:
            self.metrics.requests.labels("bad_request").inc()
            response = _error(400, str(exc), "invalid_request_error")
        except HTTPException as exc:
            response = _error(exc.code or 500, exc.description or exc.name, "invalid_request_error")
        except Exception as exc:  # noqa: BLE001 - one bad request must never take the server down
            log.exception("request failed")
            self.metrics.requests.labels("error").inc()
            response = _error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
        return response(environ, start_response)

    def on_completions(self, request: Request) -> Response:
        req = parse_completion(request.get_data(), self.engine.config)
        result = self.engine.complete(req.prompt, req.max_tokens, req.temperature, req.seed)
        self.metrics.observe(result)
        return _json(completion_body(result, self.engine.config.name))

    def on_metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), content_type=CONTENT_TYPE_LATEST)

    def on_health(self, request: Request) -> Response:
        cache = self.engine.cache
        info: dict[str, Any] = {"status": "ok", "model": self.engine.config.name, "cache": None}
        if cache is not None:
            info["cache"] = {"url": cache.url, "open": cache.get() is not None,
                             "block_tokens": cache.namespace.block_tokens, "stats": cache.stats()}
        return _json(info)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _error(status: int, message: str, kind: str) -> Response:
    return _json({"error": {"message": message, "type": kind, "code": status}}, status)


def build_engine(model: str, cache_url: str | None, block_tokens: int = 64,
                 capacity_bytes: int | None = None) -> Engine:
    config = get_preset(model)
    cache = None
    if cache_url and cache_url != "none":
        cache = CacheHandle(cache_url, namespace_for(config, block_tokens), capacity_bytes)
        cache.get()  # open now if the store is there; otherwise retried per request
    return Engine(Transformer(config), cache)


def make_engine_server(engine: Engine, host: str = "127.0.0.1", port: int = 0) -> BaseWSGIServer:
    """A threaded HTTP server bound to (host, port); port 0 picks a free one (`server.port`)."""
    return make_server(host, port, EngineApp(engine), threaded=True)


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 0) -> None:
    server = make_engine_server(engine, host, port)
    log.info("chainfs engine (%s) serving on http://%s:%d", engine.config.name, host, server.port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
