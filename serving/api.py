"""The scoring API: a live session in, a probability and an on-site decision out.

`POST /score` and `POST /score/batch` (bearer token) are answered by `ScoringRoutes`; FastAPI
serves `/health`, `/metrics` and the OpenAPI schema. docs/serving.md describes the routes, the
fields and the settings.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response

from serving import s3_files
from serving.api_metrics import ApiMetrics
from serving.api_settings import ApiSettings
from serving.decisions import DecisionLog
from serving.endpoint_processes import EndpointProcesses
from serving.holder import ModelHolder
from serving.offers import OfferChooser, load_uplift_model
from serving.online import check_model_service
from serving.preference import load_ranker
from serving.runtime import freeze_startup_heap, single_threaded_openmp
from serving.scoring import ScoringEngine
from serving.scoring_routes import ScoringRoutes, declare_scoring_routes

log = logging.getLogger(__name__)

__all__ = ["ApiSettings", "ScoringRoutes", "app_from_env", "create_app", "serve"]


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _artifact(path: str | None, settings: ApiSettings) -> str | None:
    """A local copy of an optional model directory (downloaded when it is an s3:// URI); None,
    logged, when it cannot be had: the API then runs without it, as when none was trained."""
    if not path or not s3_files.is_s3(path):
        return path
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return s3_files.local_copy(path, Path(settings.artifact_cache_dir or "."))
    except (OSError, BotoCoreError, ClientError) as error:
        log.error("%s not downloaded: %s", path, error)
        return None


def create_app(settings: ApiSettings) -> ScoringRoutes:
    """The scoring API for `settings`; the model loads and Redis connects at startup."""
    metrics = ApiMetrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        single_threaded_openmp()  # the event loop's thread is the one that scores
        holder = ModelHolder(settings.model_path, check=check_model_service)
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
        offers = OfferChooser(settings.policy, settings.experiment, settings.exploration,
                              load_uplift_model(_artifact(settings.uplift_model_path, settings)),
                              settings.offer_policy)
        engine = ScoringEngine(holder, settings.redis_url, settings.scoring, settings.policy,
                               endpoint, metrics, decisions, settings.experiment, offers,
                               load_ranker(_artifact(settings.preference_path, settings)))
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
    declare_scoring_routes(app)

    @app.get("/health")
    async def health() -> Response:
        """Model version, mode, breaker states; 200 whenever the process answers."""
        return _json(state["engine"].health())

    # documented as what it is: Prometheus' text format, not JSON
    @app.get("/metrics", response_class=PlainTextResponse)
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
