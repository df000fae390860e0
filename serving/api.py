"""The scoring API: a live session in, a probability and an on-site decision out.

`POST /score` and `POST /score/batch` (bearer token) are answered by `ScoringRoutes`; FastAPI
serves `/health`, `/metrics` and the OpenAPI schema. docs/serving.md describes the routes, the
fields and the settings.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import ValidationError

from serving.api_metrics import ApiMetrics
from serving.api_requests import (
    CHALLENGE,
    UNAUTHORIZED,
    BatchRequest,
    ScoreRequest,
    bearer_ok,
    invalid,
)
from serving.api_settings import ApiSettings
from serving.contract import read_body, send_json
from serving.decisions import DecisionLog
from serving.endpoint import EndpointProcesses
from serving.holder import ModelHolder
from serving.runtime import freeze_startup_heap, single_threaded_openmp
from serving.scoring import ScoreInput, ScoringEngine

__all__ = ["ApiSettings", "ScoringRoutes", "app_from_env", "create_app", "serve"]

_UNAUTHORIZED = orjson.dumps(UNAUTHORIZED)
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid bearer token", "content": {"application/json": {}}},
    422: {"description": "invalid request; `detail` names each bad field",
          "content": {"application/json": {}}},
}


def _input(request: ScoreRequest) -> ScoreInput:
    return ScoreInput(request.user_id, request.session_id, request.product_id, request.context)


class ScoringRoutes:
    """The scoring API as served: the scoring routes answered here, every other request by FastAPI.

    The one implementation of the bearer check, validation, scoring and metrics of `/score` and
    `/score/batch`, as the outermost ASGI app (FastAPI's middleware, router and dependency
    solving stay off the hot path). Other attributes (``state``, ``openapi``...) are FastAPI's.
    """

    def __init__(self, app: FastAPI, token: str, metrics: ApiMetrics,
                 state: dict[str, Any]) -> None:
        self.app = app
        self.token = token.encode()
        self.metrics = metrics
        self._state = state  # the engine, once the lifespan has started it
        self.routes = {"/score": (ScoreRequest, self._score),
                       "/score/batch": (BatchRequest, self._score_batch)}

    async def __call__(self, scope, receive, send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if not bearer_ok(header, self.token):
            self.metrics.answered(path, 401)
            await send_json(send, 401, _UNAUTHORIZED, [CHALLENGE])
            return
        model, answer = route
        try:
            body = model.model_validate_json(await read_body(receive))
        except ValidationError as error:
            self.metrics.answered(path, 422)
            await send_json(send, 422, invalid(error))
            return
        await send_json(send, 200, await answer(body))
        self.metrics.answered(path, 200, time.perf_counter() - started)

    async def _score(self, body: ScoreRequest) -> dict[str, Any]:
        return await self._state["engine"].score(_input(body))

    async def _score_batch(self, body: BatchRequest) -> dict[str, Any]:
        return {"results": await self._state["engine"].score_many(
            [_input(r) for r in body.requests])}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


def _declare_scoring_routes(app: FastAPI) -> None:
    """Declare the scoring routes in FastAPI's OpenAPI schema; `ScoringRoutes` answers them."""

    async def score(body: ScoreRequest) -> dict:
        """Score one shopper's session: probability, band, action, reasons and fallbacks."""
        raise NotImplementedError("answered by ScoringRoutes")

    async def score_batch(body: BatchRequest) -> dict:
        """Score 1 to 100 requests: ``{"results": [...]}`` in order."""
        raise NotImplementedError("answered by ScoringRoutes")

    for path, endpoint in (("/score", score), ("/score/batch", score_batch)):
        app.add_api_route(path, endpoint, methods=["POST"], responses=_AUTH_RESPONSES)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def create_app(settings: ApiSettings) -> ScoringRoutes:
    """The scoring API for `settings`; the model loads and Redis connects at startup."""
    metrics = ApiMetrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        single_threaded_openmp()  # the event loop's thread is the one that scores
        holder = ModelHolder(settings.model_path)
        holder.try_load()
        holder.watch(settings.watch_interval_s)
        endpoint = None
        if settings.scoring.mode == "endpoint":
            # one boto3 client process per call in flight; a failure to start stops the API here
            endpoint = EndpointProcesses(
                settings.endpoint_name or "intent-local", settings.endpoint_url,
                settings.endpoint_region, processes=settings.scoring.endpoint_max_in_flight,
                read_timeout_s=max(settings.scoring.deadline_s, 0.05))
            await endpoint.start()
        decisions = DecisionLog(settings.decision_log_dir) if settings.decision_log_dir else None
        engine = ScoringEngine(holder, settings.redis_url, settings.scoring, settings.policy,
                               endpoint, metrics, decisions, settings.experiment)
        state.update(engine=engine, holder=holder, decisions=decisions)
        app.state.engine = engine
        app.state.decisions = decisions
        freeze_startup_heap()
        try:
            yield
        finally:
            holder.stop()
            await engine.close()
            if decisions is not None:
                decisions.close()

    app = FastAPI(title="intent scoring API", version="1", lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    _declare_scoring_routes(app)

    @app.get("/health")
    async def health() -> Response:
        """Model version, mode, breaker states; 200 whenever the process answers."""
        return _json(state["engine"].health())

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text: latency histograms, fallbacks, errors by kind, decisions."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        from serving.breaker import STATE_CODES

        engine = state["engine"]
        metrics.breaker.labels("redis").set(STATE_CODES[engine.redis_breaker.state])
        metrics.breaker.labels("endpoint").set(STATE_CODES[engine.endpoint_breaker.state])
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.metrics = metrics
    return ScoringRoutes(app, settings.token, metrics, state)


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "warning") -> None:
    """Run the API configured from the environment under uvicorn (uvloop + httptools).

    Each worker process builds its own app (own model, breakers, decision log file).
    """
    import uvicorn

    ApiSettings.from_env()  # fail here, with the reason, rather than in every worker
    uvicorn.run("serving.api:app_from_env", factory=True, host=host, port=port, workers=workers,
                loop="uvloop", http="httptools", access_log=False, log_level=log_level)


def app_from_env() -> ScoringRoutes:
    """The app configured from the environment (uvicorn's factory)."""
    return create_app(ApiSettings.from_env())
