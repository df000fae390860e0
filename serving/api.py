"""The scoring API (FastAPI): a live session in, a probability and an on-site decision out.

Routes:

- ``POST /score`` ``{user_id, session_id, product_id?, context?}`` -> probability, band, action,
  expected values, top reasons, model version, ``scored_by`` (in_process / endpoint / prior) and
  ``fallback`` (the fallbacks used, empty when none) — see `serving.scoring`;
- ``POST /score/batch`` ``{"requests": [...]}`` (1 to 100) -> ``{"results": [...]}`` in order;
- ``GET /health``: model version, mode, breaker states (200 whenever the process answers);
- ``GET /metrics``: Prometheus text (latency histograms, fallbacks, errors by kind, decisions).

``/score`` and ``/score/batch`` need ``Authorization: Bearer <INTENT_API_TOKEN>`` (401
otherwise); health and metrics are open for load balancers and scrapers. Bodies are validated
strictly (unknown fields, empty or over-long ids, non-scalar context values are refused) and a
refusal is a 422 naming each bad field. Whatever Redis or the endpoint do, a valid request gets a
200 inside the deadline, flagged when a fallback answered. The ``context`` object is logged with
the decision (page, cart...); its ``order_value``, when a number, is the order value the policy
prices incentives with. With ``INTENT_EXPERIMENT`` set (``INTENT_EXPERIMENT_VARIANTS``, control
first, default ``control,treatment``; ``INTENT_EXPERIMENT_WEIGHTS``, default equal;
``INTENT_EXPERIMENT_SALT``, default the name) every answer carries the user's variant and the
policy that decided (rules for the control, the model otherwise): see `serving.scoring`.

Configuration is read from the environment when the app is built (`ApiSettings.from_env`), never
at import time.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Optional, Union

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError
from pydantic import StringConstraints

from intent_assets.experiments.assignment import ExperimentDesign
from serving.container import read_body, send_json
from serving.decisions import DecisionLog
from serving.endpoint import EndpointProcesses
from serving.holder import ModelHolder
from serving.policy import PolicyParams
from serving.project import intent_home, redis_url
from serving.runtime import freeze_startup_heap, single_threaded_openmp
from serving.scoring import ScoreInput, ScoringEngine, ScoringSettings

MAX_BATCH = 100

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128,
                                              pattern=r"^[^\x00-\x1f\x7f]+$")]
ContextValue = Union[StrictStr, StrictInt, StrictFloat, StrictBool, None]


class ScoreRequest(BaseModel):
    """One shopper at one moment: who, which session, which product (if any), and context."""

    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    session_id: Identifier
    product_id: Optional[Identifier] = None
    context: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)],
                  ContextValue] = Field(default_factory=dict, max_length=32)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[ScoreRequest] = Field(min_length=1, max_length=MAX_BATCH)


@dataclass(frozen=True)
class ApiSettings:
    """Everything the API needs, from the environment or given directly (tests, CLI)."""

    token: str
    model_path: Optional[str]
    redis_url: Optional[str]
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    policy: PolicyParams = field(default_factory=PolicyParams)
    endpoint_name: Optional[str] = None
    endpoint_url: Optional[str] = None
    endpoint_region: Optional[str] = None
    decision_log_dir: Optional[str] = None
    watch_interval_s: float = 1.0
    experiment: Optional[ExperimentDesign] = None

    @classmethod
    def from_env(cls, env: Optional[dict[str, str]] = None, **overrides: Any) -> "ApiSettings":
        """Settings from INTENT_* variables (see the README's serving section)."""
        env = dict(os.environ if env is None else env)
        home = intent_home(env)
        token = overrides.pop("token", None) or env.get("INTENT_API_TOKEN")
        if not token:
            raise ValueError("INTENT_API_TOKEN is not set: the scoring API refuses to run open")

        def number(name: str, default: float) -> float:
            raw = env.get(name)
            return float(raw) if raw not in (None, "") else default

        scoring = ScoringSettings(
            mode=env.get("INTENT_SCORING_MODE", "in_process"),
            deadline_s=number("INTENT_DEADLINE_MS", 50.0) / 1000.0,
            redis_timeout_s=number("INTENT_REDIS_TIMEOUT_MS", 20.0) / 1000.0,
            top_k=int(number("INTENT_TOP_K", 3)),
            prior=float(env["INTENT_PRIOR"]) if env.get("INTENT_PRIOR") else None,
            breaker_failures=int(number("INTENT_BREAKER_FAILURES", 3)),
            breaker_reset_s=number("INTENT_BREAKER_RESET_MS", 1000.0) / 1000.0,
            endpoint_max_in_flight=int(number("INTENT_ENDPOINT_MAX_IN_FLIGHT", 1)),
        )
        policy_values = {}
        for f in fields(PolicyParams):
            raw = env.get(f"INTENT_POLICY_{f.name.upper()}")
            if raw:
                policy_values[f.name] = float(raw)
        experiment = None
        if env.get("INTENT_EXPERIMENT"):
            name = env["INTENT_EXPERIMENT"]
            variants = tuple(v.strip() for v in env.get("INTENT_EXPERIMENT_VARIANTS",
                                                        "control,treatment").split(","))
            weights = tuple(float(w) for w in env["INTENT_EXPERIMENT_WEIGHTS"].split(",")) \
                if env.get("INTENT_EXPERIMENT_WEIGHTS") else (1.0,) * len(variants)
            experiment = ExperimentDesign(name, env.get("INTENT_EXPERIMENT_SALT") or name,
                                          variants, weights)
        values = dict(
            token=token,
            model_path=env.get("INTENT_MODEL_PATH") or str(home / "endpoint" / "model"),
            redis_url=redis_url(home, env, default=None),
            scoring=scoring,
            policy=PolicyParams(**policy_values),
            endpoint_name=env.get("INTENT_ENDPOINT_NAME", "intent-local"),
            endpoint_url=env.get("INTENT_ENDPOINT_URL") or None,
            endpoint_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            decision_log_dir=env.get("INTENT_DECISION_LOG_DIR") or str(home / "decisions"),
            experiment=experiment,
        )
        values.update(overrides)
        return cls(**values)


class ApiMetrics:
    """The API's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "intent_score_latency_seconds", "Time to answer a scoring request, by route",
            ["route"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1,
                     0.25, 1.0))
        self.requests = Counter("intent_score_requests_total", "Scoring requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.fallbacks = Counter("intent_score_fallbacks_total", "Answers given by a fallback",
                                 ["kind"], registry=self.registry)
        self.errors = Counter("intent_score_errors_total", "Failures met while scoring, by kind",
                              ["kind"], registry=self.registry)
        self.decisions = Counter("intent_decisions_total", "Decisions by action", ["action"],
                                 registry=self.registry)
        self.breaker = Gauge("intent_breaker_state",
                             "Circuit breaker state (0 closed, 1 half-open, 2 open)",
                             ["dependency"], registry=self.registry)
        self._children: dict[tuple[str, str], Any] = {}

    def count(self, name: str, label: str) -> None:
        key = (name, label)
        child = self._children.get(key)
        if child is None:
            metric = {"fallback": self.fallbacks, "error": self.errors,
                      "decision": self.decisions}[name]
            child = self._children[key] = metric.labels(label)
        child.inc()


_UNION_BRANCHES = {"str", "int", "float", "bool", "none"}


def _error_list(error: RequestValidationError | ValidationError) -> list[dict[str, Any]]:
    """One entry per bad field: where (dotted path in the body), what is wrong, error type."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in error.errors():
        loc = [str(part) for part in item.get("loc", ()) if part != "body"]
        message, kind = item.get("msg"), item.get("type")
        if len(loc) >= 3 and loc[0] == "context" and loc[-1] in _UNION_BRANCHES:
            # pydantic reports each branch of the value union; say it once
            loc = loc[:-1]
            message, kind = "context values must be a string, number, boolean or null", \
                "context_value_type"
        where = ".".join(loc) or "body"
        if where in seen:
            continue
        seen.add(where)
        out.append({"field": where, "message": message, "type": kind})
    return out


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


_UNAUTHORIZED = json.dumps({"error": "a valid bearer token is required"}).encode()
_CHALLENGE = (b"www-authenticate", b'Bearer realm="intent"')


class ScoreFastPath:
    """The scoring API as served: ``POST /score`` answered before FastAPI, the rest by FastAPI.

    The outermost ASGI app, so the hot route pays neither FastAPI's middlewares (error, telemetry
    and body-limit wrappers around receive and send), router, dependency solving nor Starlette's
    Request/Response objects; it does the same things — bearer check, strict validation of the
    same `ScoreRequest` model with the same 422 body, the engine, the metrics. Every other
    request, and the lifespan, goes to FastAPI, which also declares ``/score`` for the OpenAPI
    schema. Attributes not its own (``state``, ``openapi``...) are the FastAPI app's.
    """

    def __init__(self, app: FastAPI, handler) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/score" and scope["method"] == "POST":
            await self.handler(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


def create_app(settings: ApiSettings) -> ScoreFastPath:
    """The scoring API for `settings`; the model loads and Redis connects at startup."""
    metrics = ApiMetrics()
    state: dict[str, Any] = {}
    token = settings.token.encode()

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

    def token_ok(header: bytes) -> bool:
        scheme, _, presented = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(presented.strip(), token)

    async def authorized(request: Request) -> None:
        if not token_ok(request.headers.get("authorization", "").encode()):
            metrics.requests.labels(request.url.path, "401").inc()
            raise HTTPException(status_code=401, detail="a valid bearer token is required",
                                headers={"WWW-Authenticate": 'Bearer realm="intent"'})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("validation").inc()
        metrics.requests.labels(request.url.path, "422").inc()
        return JSONResponse(status_code=422, content={"error": "invalid request",
                                                      "detail": _error_list(error)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=error.status_code, content={"error": error.detail},
                            headers=error.headers)

    score_latency = metrics.latency.labels("/score")
    batch_latency = metrics.latency.labels("/score/batch")
    score_ok = metrics.requests.labels("/score", "200")
    batch_ok = metrics.requests.labels("/score/batch", "200")

    @app.post("/score", dependencies=[Depends(authorized)])
    async def score(body: ScoreRequest) -> Response:
        """Score one request (answered by `ScoreFastPath`; declared here for the schema)."""
        started = time.perf_counter()
        answer = await state["engine"].score(
            ScoreInput(body.user_id, body.session_id, body.product_id, body.context))
        response = _json(answer)
        score_latency.observe(time.perf_counter() - started)
        score_ok.inc()
        return response

    score_unauthorized = metrics.requests.labels("/score", "401")
    score_invalid = metrics.requests.labels("/score", "422")
    validation_errors = metrics.errors.labels("validation")

    async def score_fast(scope, receive, send) -> None:
        started = time.perf_counter()
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if not token_ok(header):
            score_unauthorized.inc()
            await send_json(send, 401, _UNAUTHORIZED, [_CHALLENGE])
            return
        try:
            body = ScoreRequest.model_validate_json(await read_body(receive))
        except ValidationError as error:
            validation_errors.inc()
            score_invalid.inc()
            await send_json(send, 422, {"error": "invalid request",
                                        "detail": _error_list(error)})
            return
        answer = await state["engine"].score(
            ScoreInput(body.user_id, body.session_id, body.product_id, body.context))
        await send_json(send, 200, orjson.dumps(answer))
        score_latency.observe(time.perf_counter() - started)
        score_ok.inc()

    @app.post("/score/batch", dependencies=[Depends(authorized)])
    async def score_batch(body: BatchRequest) -> Response:
        started = time.perf_counter()
        answers = await state["engine"].score_many(
            [ScoreInput(r.user_id, r.session_id, r.product_id, r.context) for r in body.requests])
        response = _json({"results": answers})
        batch_latency.observe(time.perf_counter() - started)
        batch_ok.inc()
        return response

    @app.get("/health")
    async def health() -> Response:
        return _json(state["engine"].health())

    @app.get("/metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        from serving.breaker import STATE_CODES

        engine = state["engine"]
        metrics.breaker.labels("redis").set(STATE_CODES[engine.redis_breaker.state])
        metrics.breaker.labels("endpoint").set(STATE_CODES[engine.endpoint_breaker.state])
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.metrics = metrics
    return ScoreFastPath(app, score_fast)


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "warning") -> None:
    """Run the API configured from the environment under uvicorn (uvloop + httptools).

    Each worker process builds its own app (own model, breakers, decision log file).
    """
    import uvicorn

    ApiSettings.from_env()  # fail here, with the reason, rather than in every worker
    uvicorn.run("serving.api:app_from_env", factory=True, host=host, port=port, workers=workers,
                loop="uvloop", http="httptools", access_log=False, log_level=log_level)


def app_from_env() -> ScoreFastPath:
    """The app configured from the environment (uvicorn's factory)."""
    return create_app(ApiSettings.from_env())
