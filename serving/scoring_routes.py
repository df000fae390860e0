"""The scoring routes, `POST /score` and `POST /score/batch`, as a bare ASGI app in front of FastAPI.

The one implementation of their bearer check, validation, scoring and metrics; FastAPI only
declares them in the OpenAPI schema. Skipping FastAPI's middleware, router and dependency
solving saves ~150-250 µs of API CPU per /score (a third) and keeps p99 at 1,000 req/s near
1 ms instead of 4-8 ms (`python benchmarks/serving.py --sections score`, with and without it).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import Depends, FastAPI
from fastapi.security import HTTPBearer
from pydantic import ValidationError

from serving.api_metrics import ApiMetrics
from serving.api_requests import (
    CHALLENGE,
    UNAUTHORIZED,
    BatchAnswer,
    BatchRequest,
    InvalidRequest,
    ScoreAnswer,
    ScoreRequest,
    Unauthorized,
    invalid,
)
from serving.contract import bearer_ok, read_body, send_json
from serving.scoring import ScoreInput

_UNAUTHORIZED = orjson.dumps(UNAUTHORIZED)
# the bodies `ScoringRoutes` really sends: a client generated from the schema parses them
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid bearer token", "model": Unauthorized},
    422: {"description": "invalid request; `detail` names each bad field",
          "model": InvalidRequest},
}


def _input(request: ScoreRequest) -> ScoreInput:
    event, preceding = request.event_args(), request.preceding_args()
    refused = request.args_refusal(event, preceding)
    if refused is not None:
        return ScoreInput(request.user_id, request.session_id, request.product_id,
                          request.context, event_refused=refused)
    return ScoreInput(request.user_id, request.session_id, request.product_id, request.context,
                      event, preceding)


class ScoringRoutes:
    """The scoring API as served: the scoring routes answered here, every other request by FastAPI.

    Attributes not its own (``state``, ``openapi``...) are the FastAPI app's.
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
        try:
            result = await answer(body)
        except Exception:
            # uvicorn answers 500; counted, so the IntentApiServerErrors rule sees it
            self.metrics.answered(path, 500)
            raise
        await send_json(send, 200, result)
        self.metrics.answered(path, 200, time.perf_counter() - started)

    async def _score(self, body: ScoreRequest) -> dict[str, Any]:
        return await self._state["engine"].score(_input(body))

    async def _score_batch(self, body: BatchRequest) -> dict[str, Any]:
        return {"results": await self._state["engine"].score_many(
            [_input(r) for r in body.requests])}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


def declare_scoring_routes(app: FastAPI) -> None:
    """Declare the scoring routes in FastAPI's OpenAPI schema; `ScoringRoutes` answers them."""

    async def score(body: ScoreRequest) -> ScoreAnswer:
        """Score one shopper's session: probability, band, action, reasons, fallbacks and the
        categories to upsell."""
        raise NotImplementedError("answered by ScoringRoutes")

    async def score_batch(body: BatchRequest) -> BatchAnswer:
        """Score 1 to 100 requests: ``{"results": [...]}`` in order."""
        raise NotImplementedError("answered by ScoringRoutes")

    # the dependency only puts the bearer scheme in the schema: `ScoringRoutes` checks the token
    bearer = [Depends(HTTPBearer(auto_error=False, description="the API token"))]
    for path, endpoint in (("/score", score), ("/score/batch", score_batch)):
        app.add_api_route(path, endpoint, methods=["POST"], responses=_AUTH_RESPONSES,
                          dependencies=bearer)
