"""The scoring engine behind the API: features, model, policy and fallbacks under one deadline.

Per request: the online features (one pipelined Redis read), the model (in process, or through
the endpoint), the decision policy (the rules policy for an experiment's control), the decision
log. A failure never becomes an exception to the caller: the answer says which fallback gave it
(docs/serving.md lists them); breakers let a recovered Redis or endpoint back in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from serving.breaker import CircuitBreaker
from serving.contract import EndpointError, score_rows
from serving.decisions import DecisionLog
from serving.endpoint import CoalescingInvoker
from serving.endpoint_processes import EndpointProcesses
from serving.experiments import ExperimentDesign, assign
from serving.holder import LoadedModel, ModelHolder
from serving.online import FeatureLayout, defaults_row
from serving.online_reader import AsyncOnlineReader, RedisUnavailable
from serving.policy import OFFERS, PolicyParams, decide, decide_by_rules
from streaming_jobs.online_layout import DEFAULT_PROJECT

log = logging.getLogger(__name__)

MODES = ("in_process", "endpoint")
FALLBACK_REDIS = "redis_unavailable"
FALLBACK_ENDPOINT = "endpoint_unavailable"
FALLBACK_PRIOR = "prior"
FALLBACK_STALE = "stale_features"   # a view's row older than its TTL: read as missing
DEFAULT_PRIOR = 0.05


@dataclass(frozen=True)
class ScoringSettings:
    """Deadlines, modes and fallbacks of the engine."""

    mode: str = "in_process"
    deadline_s: float = 0.05
    redis_timeout_s: float = 0.02
    # left for the in-process fallback when the endpoint is given the rest of the deadline
    fallback_reserve_s: float = 0.01
    top_k: int = 3
    prior: float | None = None           # None: the model's base rate, else DEFAULT_PRIOR
    breaker_failures: int = 3
    # endpoint calls out at once (one boto3 client process each); requests arriving meanwhile
    # share the next call. 1 suits a local container; a remote endpoint's longer calls may want
    # 2-4.
    endpoint_max_in_flight: int = 1
    breaker_reset_s: float = 1.0
    project: str = DEFAULT_PROJECT
    # share of decisions whose feature vector is logged with them (INTENT_LOG_FEATURES_RATE):
    # the online_offline_consistency asset replays those requests offline
    log_features_rate: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.endpoint_max_in_flight < 1:
            raise ValueError("endpoint_max_in_flight must be at least 1")
        if self.deadline_s <= 0 or self.redis_timeout_s <= 0:
            raise ValueError("deadline and redis timeout must be positive")
        if not 0.0 <= self.log_features_rate <= 1.0:
            raise ValueError(f"log_features_rate must be in [0, 1], got {self.log_features_rate}")
        if self.prior is not None and not 0.0 <= self.prior <= 1.0:
            raise ValueError(f"prior must be in [0, 1], got {self.prior}")


@dataclass(frozen=True)
class ScoreInput:
    """One scoring request, validated by the API."""

    user_id: str
    session_id: str
    product_id: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)


def model_prior(model: LoadedModel | None, configured: float | None) -> float:
    """The probability answered when no model can score: configured, else the model's base rate."""
    if configured is not None:
        return configured
    if model is not None:
        rate = (model.artifact.manifest.get("metrics", {}).get("test", {}) or {}).get("base_rate")
        if isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0:
            return float(rate)
    return DEFAULT_PRIOR


@dataclass
class _Served:
    """A model and its Redis layout, swapped together."""

    model: LoadedModel
    layout: FeatureLayout


class ScoringEngine:
    """Scores requests with fallbacks; one per API process, used from its event loop."""

    def __init__(self, holder: ModelHolder, redis_url: str | None,
                 settings: ScoringSettings = ScoringSettings(),
                 policy: PolicyParams = PolicyParams(),
                 endpoint: EndpointProcesses | None = None, metrics=None,
                 decisions: DecisionLog | None = None,
                 experiment: ExperimentDesign | None = None) -> None:
        if settings.mode == "endpoint" and endpoint is None:
            raise ValueError("endpoint mode needs an endpoint client")
        self.holder = holder
        self.settings = settings
        self.policy = policy
        self.endpoint = endpoint
        self.metrics = metrics
        self.decisions = decisions
        self.experiment = experiment
        self._shares = dict(zip(experiment.variants, experiment.shares.tolist())) \
            if experiment is not None else {}
        self.redis_url = redis_url
        self.redis_breaker = CircuitBreaker("redis", settings.breaker_failures,
                                            settings.breaker_reset_s)
        self.endpoint_breaker = CircuitBreaker("endpoint", settings.breaker_failures,
                                               settings.breaker_reset_s)
        self._served: _Served | None = None
        self._reader: AsyncOnlineReader | None = None
        self._invoker = CoalescingInvoker(endpoint.invoke, settings.top_k,
                                          settings.endpoint_max_in_flight) \
            if endpoint is not None else None
        self._sync(holder.current)

    # -- model swaps ---------------------------------------------------------------------------
    def _sync(self, model: LoadedModel | None) -> _Served | None:
        """The served pair for the holder's current model, rebuilding the layout on a swap."""
        served = self._served
        if model is None:
            return served
        if served is None or served.model is not model:
            layout = FeatureLayout.from_artifact(model.artifact, self.settings.project)
            served = _Served(model, layout)
            self._served = served
            if self.redis_url:
                if self._reader is None:
                    self._reader = AsyncOnlineReader(layout, self.redis_url,
                                                     connect_timeout=self.settings.redis_timeout_s)
                else:
                    self._reader.layout = layout
        return served

    @property
    def model_version(self) -> str | None:
        current = self.holder.current
        return current.version if current is not None else None

    def prior(self) -> float:
        return model_prior(self.holder.current, self.settings.prior)

    # -- scoring -------------------------------------------------------------------------------
    def _count(self, name: str, label: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name, label)

    async def _features(self, served: _Served, req: ScoreInput, deadline: float
                        ) -> tuple[dict[str, Any], list[str], list[str], int | None]:
        """(row, missing entities, fallbacks, the time TTLs were judged at) for one request."""
        layout = served.layout
        reader = self._reader
        if reader is None or not self.redis_breaker.allow():
            return defaults_row(layout), [], [FALLBACK_REDIS], None
        budget = min(self.settings.redis_timeout_s, deadline - time.perf_counter())
        if budget <= 0:
            return defaults_row(layout), [], [FALLBACK_REDIS], None
        try:
            features = await reader.read(req.user_id, req.session_id, req.product_id,
                                         timeout=budget)
        except asyncio.TimeoutError:
            self.redis_breaker.failure()
            self._count("error", "redis_timeout")
            return defaults_row(layout), [], [FALLBACK_REDIS], None
        except (RedisUnavailable, OSError) as error:
            self.redis_breaker.failure()
            self._count("error", "redis_error")
            log.debug("redis read failed: %s", error)
            return defaults_row(layout), [], [FALLBACK_REDIS], None
        self.redis_breaker.success()
        return (features.row(), features.missing, [FALLBACK_STALE] if features.stale else [],
                features.as_of_us)

    async def _predict(self, served: _Served | None, rows: list[dict[str, Any]], deadline: float
                       ) -> tuple[list[dict[str, Any]] | None, str | None, str, list[str]]:
        """(predictions, model version, scored_by, fallbacks) for rows."""
        fallbacks: list[str] = []
        if self.settings.mode == "endpoint":
            budget = deadline - time.perf_counter() - self.settings.fallback_reserve_s
            if budget > 0 and self.endpoint_breaker.allow():
                try:
                    invocation = await asyncio.wait_for(self._invoker.invoke(rows), budget)
                    self.endpoint_breaker.success()
                    return invocation.predictions, invocation.model_version, "endpoint", []
                except asyncio.TimeoutError:
                    self.endpoint_breaker.failure()
                    self._count("error", "endpoint_timeout")
                except EndpointError as error:
                    self.endpoint_breaker.failure()
                    self._count("error", "endpoint_error")
                    log.debug("endpoint failed: %s", error)
            fallbacks.append(FALLBACK_ENDPOINT)
        if served is not None:
            try:
                result = score_rows(served.model.artifact, rows, self.settings.top_k)
                return result["predictions"], result["model_version"], "in_process", fallbacks
            except Exception as error:  # a broken model must still leave an answer
                self._count("error", "model_error")
                log.error("in-process scoring failed: %s", error)
        return None, None, "prior", fallbacks + [FALLBACK_PRIOR]

    async def score_many(self, requests: Sequence[ScoreInput]) -> list[dict[str, Any]]:
        """Score requests (one Redis read each, concurrently; one model call); never raises."""
        started = time.perf_counter()
        deadline = started + self.settings.deadline_s
        served = self._sync(self.holder.current)
        if served is None:
            reads = [({}, [], [], None) for _ in requests]
        elif len(requests) == 1:
            reads = [await self._features(served, requests[0], deadline)]
        else:
            reads = await asyncio.gather(*(self._features(served, r, deadline)
                                           for r in requests))
        rows = [read[0] for read in reads]
        if served is None:  # no model loaded yet: nothing knows the features to read or score
            predictions, version, scored_by, model_fallbacks = None, None, "prior", \
                [FALLBACK_PRIOR]
        else:
            predictions, version, scored_by, model_fallbacks = await self._predict(
                served, rows, deadline)
        prior = self.prior()
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        answers = []
        for i, (req, (row, missing, read_fallbacks, as_of_us)) in enumerate(zip(requests, reads)):
            fallbacks = read_fallbacks + model_fallbacks
            if predictions is None:
                probability, reasons = prior, []
            else:
                probability = float(predictions[i]["probability"])
                reasons = predictions[i].get("reasons") or []
            order_value = req.context.get("order_value") if req.context else None
            order_value = float(order_value) if isinstance(order_value, (int, float)) \
                and not isinstance(order_value, bool) else None
            variant = assign(req.user_id, self.experiment) if self.experiment else None
            by_rules = variant is not None and variant == self.experiment.control
            decision = decide_by_rules(row, probability, self.policy, order_value) if by_rules \
                else decide(probability, self.policy, order_value)
            answer = {
                "request_id": uuid.uuid4().hex,
                "probability": probability,
                "band": decision.band,
                "action": decision.action,
                "offer": OFFERS[decision.action],
                "policy": "rules" if by_rules else "model",
                "experiment": self.experiment.name if self.experiment else None,
                "variant": variant,
                "expected_values": decision.expected_values,
                "reasons": reasons,
                "model_version": version,
                "scored_by": scored_by,
                "fallback": fallbacks,
                "missing_entities": missing,
                "latency_ms": round(elapsed_ms, 3),
            }
            answers.append(answer)
            for kind in fallbacks:
                self._count("fallback", kind)
            self._count("decision", decision.action)
            if self.decisions is not None:
                record = {"ts": _now_iso(), "user_id": req.user_id, "session_id": req.session_id,
                          "product_id": req.product_id, "context": dict(req.context or {}),
                          **answer}
                if variant is not None:
                    record["variant_share"] = self._shares[variant]
                if served is not None and _sampled(answer["request_id"],
                                                   self.settings.log_features_rate):
                    record["features"] = row
                    record["feature_service"] = served.model.artifact.feature_service
                    record["as_of"] = _iso_us(as_of_us)
                self.decisions.append(record)
        return answers

    async def score(self, request: ScoreInput) -> dict[str, Any]:
        return (await self.score_many([request]))[0]

    def health(self) -> dict[str, Any]:
        current = self.holder.current
        status = "ok"
        if current is None:
            status = "no_model"
        elif self.redis_breaker.state != "closed" or (
                self.settings.mode == "endpoint" and self.endpoint_breaker.state != "closed"):
            status = "degraded"
        out = {"status": status, "model_version": current.version if current else None,
               "model_source": str(current.source) if current else None,
               "model_error": self.holder.last_error, "mode": self.settings.mode,
               "redis": self.redis_breaker.to_json(), "prior": self.prior()}
        if self.experiment is not None:
            out["experiment"] = {"name": self.experiment.name, "control": self.experiment.control,
                                 "shares": self._shares}
        if self.settings.mode == "endpoint":
            out["endpoint"] = {**self.endpoint_breaker.to_json(),
                               "name": self.endpoint.endpoint_name,
                               "url": self.endpoint.endpoint_url,
                               "calls": self._invoker.calls, "rows": self._invoker.rows,
                               **self.endpoint.to_json()}
        return out

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
        if self.endpoint is not None:
            await self.endpoint.close()


def _sampled(request_id: str, rate: float) -> bool:
    """Whether a request's features are logged: a hash of its (random) id against the rate."""
    return rate >= 1.0 or (rate > 0.0 and zlib.crc32(request_id.encode()) < rate * 2**32)


def _iso_us(us: int | None) -> str | None:
    if us is None:
        return None
    return dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc).isoformat()


def _now_iso() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat()
