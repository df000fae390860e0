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
from typing import Any, NamedTuple

import orjson

from serving.breaker import CircuitBreaker
from serving.contract import EndpointError, score_rows
from serving.decisions import DecisionLog
from serving.endpoint import CoalescingInvoker
from serving.endpoint_processes import EndpointProcesses
from serving.experiments import ExperimentDesign
from serving.holder import LoadedModel, ModelHolder
from serving.online import FeatureLayout, defaults_row
from serving.online_reader import AsyncOnlineReader, RedisUnavailable
from serving.offers import OfferChooser
from serving.policy import OFFERS, PolicyParams
from serving.preference import NO_SIGNALS, CategoryRanker, stored_signals
from streaming_jobs.moment import fold_args
from streaming_jobs.online_layout import DEFAULT_PROJECT
from streaming_jobs.session_state import ARG_PRODUCT, ARG_TIME, FEATURE_NAMES

log = logging.getLogger(__name__)

MODES = ("in_process", "endpoint")
FALLBACK_REDIS = "redis_unavailable"
FALLBACK_ENDPOINT = "endpoint_unavailable"
FALLBACK_PRIOR = "prior"
FALLBACK_SESSION_UNKNOWN = "session_unknown"
FALLBACK_STATE_UNAVAILABLE = "session_state_unavailable"
FALLBACK_EVENT_REFUSED = "event_refused"
FALLBACK_STALE = "stale_features"   # a view's row older than its TTL: read as missing
DEFAULT_PRIOR = 0.05
# Which base rate of the model's manifest stands for a request answered without a session:
# a scoring moment (the request carries its event: a training cut's rate) or a whole session.
PRIOR_MOMENT, PRIOR_SESSION = "scoring_moment", "session"
# A sample is enough to measure skew and drift per day; logging every vector costs each request
# its serialization and the log ~1 KB a decision. `intent demo` logs all of them.
LOG_FEATURES_RATE = 0.05


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
    log_features_rate: float = LOG_FEATURES_RATE

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
    # the triggering event as the state machine takes it (`session_state.event_args`: session,
    # id, time in us, type, user, product, ...; `streaming_jobs.moment` folds it), or None
    event: tuple | None = None
    preceding: Sequence[tuple] = ()
    # why the request's events were not folded (they broke the contract), or None
    event_refused: str | None = None


def model_prior(model: LoadedModel | None, configured: float | None,
                kind: str = PRIOR_MOMENT) -> float:
    """The probability answered without a model or a session: configured, else the model's base
    rate of that kind (recorded at training in the manifest's `base_rates`; a model from before
    them has its test split's rate), else DEFAULT_PRIOR."""
    if configured is not None:
        return configured
    if model is not None:
        manifest = model.artifact.manifest
        for rate in ((manifest.get("base_rates") or {}).get(kind),
                     (manifest.get("metrics", {}).get("test", {}) or {}).get("base_rate")):
            if isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0:
                return float(rate)
    return DEFAULT_PRIOR


class _Read(NamedTuple):
    """One request's features: the row, missing entities, fallbacks, and the prior kind that
    answers it instead of the model (None: the model scores the row)."""

    row: dict[str, Any]
    missing: list[str]
    fallbacks: list[str]
    prior: str | None
    as_of_us: int | None = None   # the moment the row stands for (TTLs judged, vector logged)
    # the id of the event at as_of_us the row includes (None: the session row as the stream left it)
    as_of_event_id: str | None = None
    categories: tuple = NO_SIGNALS  # the session's category views and latest category


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
                 experiment: ExperimentDesign | None = None,
                 offers: OfferChooser | None = None,
                 preference: CategoryRanker | None = None) -> None:
        if settings.mode == "endpoint" and endpoint is None:
            raise ValueError("endpoint mode needs an endpoint client")
        self.holder = holder
        self.settings = settings
        self.policy = policy
        self.endpoint = endpoint
        self.metrics = metrics
        self.decisions = decisions
        self.experiment = experiment
        self.offers = offers or OfferChooser(policy, experiment)
        self.preference = preference
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

    def prior(self, kind: str = PRIOR_MOMENT) -> float:
        return model_prior(self.holder.current, self.settings.prior, kind)

    # -- scoring -------------------------------------------------------------------------------
    def _count(self, name: str, label: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name, label)

    async def _features(self, served: _Served, req: ScoreInput, deadline: float) -> "_Read":
        """The request's row, missing entities and fallbacks; or which prior answers it."""
        layout = served.layout
        event = req.event
        reader = self._reader
        budget = min(self.settings.redis_timeout_s, deadline - time.perf_counter())
        if reader is None or budget <= 0 or not self.redis_breaker.allow():
            return _outage(layout, event)
        product_id = req.product_id
        if product_id is None and event is not None:
            product_id = event[ARG_PRODUCT]
        try:
            # the upsell's preference reads the stored state: one more field, same round trip
            with_state = event is not None or self.preference is not None
            features = await reader.read(req.user_id, req.session_id, product_id, timeout=budget,
                                         with_state=with_state,
                                         as_of_us=event[ARG_TIME] if event else None)
        except asyncio.TimeoutError:
            self.redis_breaker.failure()
            self._count("error", "redis_timeout")
            return _outage(layout, event)
        except (RedisUnavailable, OSError) as error:
            self.redis_breaker.failure()
            self._count("error", "redis_error")
            log.debug("redis read failed: %s", error)
            return _outage(layout, event)
        self.redis_breaker.success()
        missing = features.missing
        stale = [FALLBACK_STALE] if features.stale else []
        if event is None:
            if "session" in missing:
                # nothing known of the session: the all-default row is no session the model
                # ever saw, so the session-level base rate answers, flagged
                return _Read(features.row(), missing, [FALLBACK_SESSION_UNKNOWN] + stale,
                             PRIOR_SESSION, features.as_of_us)
            return _Read(features.row(), missing, stale, None, features.as_of_us,
                         categories=stored_signals(features.session_state)
                         if self.preference is not None else NO_SIGNALS)
        stored = features.session_state
        if stored is None and "session" not in missing:
            # a row written without its state (not by the stream): score it as read, flagged
            return _Read(features.row(), missing, [FALLBACK_STATE_UNAVAILABLE] + stale, None,
                         features.as_of_us)
        try:
            moment = fold_args(orjson.loads(stored) if stored is not None else None, event,
                               req.preceding)
        except (ValueError, KeyError, TypeError) as error:  # a state this code cannot read
            self._count("error", "session_state")
            log.warning("cannot fold onto session %s's stored state: %s", req.session_id, error)
            return _Read(features.with_session_row().row(), missing,
                         [FALLBACK_STATE_UNAVAILABLE] + stale, None, features.as_of_us)
        row = features.row()  # the session row's values left undecoded: the fold gives them
        if len(moment.values) == len(layout.session_features):  # the model reads them all
            row.update(zip(FEATURE_NAMES, moment.values))
        else:
            folded = moment.features
            for name in layout.session_features:
                row[name] = folded[name]
        missing = [e for e in missing if e != "session"]
        if product_id is None and moment.last_product_id is not None:
            # a cart view names no product; training takes the session's latest one
            # (snapshots' product_id), so its features are read now, a second round trip
            missing = await self._latest_product(served, req, moment.last_product_id, row,
                                                 missing, deadline)
        # the row stands for the state after the latest event it includes: the request's, or a
        # later one the stream had already applied
        return _Read(row, missing, stale, None, moment.as_of_us, moment.as_of_event_id,
                     (moment.category_views, moment.last_category_id))

    async def _latest_product(self, served: _Served, req: ScoreInput, product_id: str,
                              row: dict[str, Any], missing: list[str], deadline: float
                              ) -> list[str]:
        """Put `product_id`'s features into `row`; the missing entities after it."""
        names = [n for plan in served.layout.views if plan.entity == "product"
                 for n in plan.features]
        budget = min(self.settings.redis_timeout_s, deadline - time.perf_counter())
        if not names or budget <= 0:
            return missing
        try:
            more = await self._reader.read(req.user_id, req.session_id, product_id,
                                           timeout=budget, as_of_us=req.event[ARG_TIME])
        except (asyncio.TimeoutError, RedisUnavailable, OSError) as error:
            self._count("error", "redis_error")
            log.debug("redis read of the session's latest product failed: %r", error)
            return missing
        values = more.row()
        for name in names:
            row[name] = values[name]
        missing = [e for e in missing if e != "product"]
        return missing + (["product"] if "product" in more.missing else [])

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
            reads = [_Read({}, [], [], None) for _ in requests]
        elif len(requests) == 1:
            reads = [await self._features(served, requests[0], deadline)]
        else:
            reads = await asyncio.gather(*(self._features(served, r, deadline)
                                           for r in requests))
        for i, req in enumerate(requests):
            if req.event_refused is not None:  # scored without its events, flagged
                log.info("event of session %s not folded: %s", req.session_id, req.event_refused)
                reads[i] = reads[i]._replace(
                    fallbacks=[FALLBACK_EVENT_REFUSED] + reads[i].fallbacks)
        # a request answered by a base rate (no session known) is not sent to the model
        scored = [i for i, read in enumerate(reads) if read.prior is None]
        predictions: list | None = None
        if served is None:  # no model loaded yet: nothing knows the features to read or score
            version, scored_by, model_fallbacks = None, "prior", [FALLBACK_PRIOR]
        elif scored:
            predicted, version, scored_by, model_fallbacks = await self._predict(
                served, [reads[i].row for i in scored], deadline)
            if predicted is not None:
                predictions = [None] * len(reads)
                for i, prediction in zip(scored, predicted):
                    predictions[i] = prediction
        else:
            version, scored_by, model_fallbacks = served.model.version, "prior", []
        prior = self.prior()
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        answers = []
        for i, (req, read) in enumerate(zip(requests, reads)):
            row, missing = read.row, read.missing
            informed = read.prior is None
            if not informed:
                # answered by the model's recorded base rate for what the request stands for
                fallbacks = read.fallbacks
                probability = model_prior(served.model if served is not None else None,
                                          self.settings.prior, read.prior)
                reasons = []
                answer_version = served.model.version if served is not None else None
                answer_by = "prior"
            else:
                fallbacks = read.fallbacks + model_fallbacks
                answer_version, answer_by = version, scored_by
                if predictions is None:
                    probability, reasons, informed = prior, [], False
                else:
                    probability = float(predictions[i]["probability"])
                    reasons = predictions[i].get("reasons") or []
            order_value = req.context.get("order_value") if req.context else None
            order_value = float(order_value) if isinstance(order_value, (int, float)) \
                and not isinstance(order_value, bool) else None
            offer = self.offers.decide(req.user_id, req.session_id, row, probability,
                                       order_value, informed)
            decision, variant = offer.decision, offer.variant
            if offer.fallbacks:
                fallbacks = fallbacks + list(offer.fallbacks)
            answer = {
                "request_id": uuid.uuid4().hex,
                "probability": probability,
                "band": decision.band,
                "action": decision.action,
                "offer": OFFERS[decision.action],
                "policy": offer.policy,
                "experiment": self.experiment.name if self.experiment else None,
                "variant": variant,
                "expected_values": decision.expected_values,
                "reasons": reasons,
                "model_version": answer_version,
                "scored_by": answer_by,
                "fallback": fallbacks,
                "missing_entities": missing,
                "latency_ms": round(elapsed_ms, 3),
                "recommended_categories": self.preference.recommend(*read.categories)
                if self.preference is not None else [],
                **offer.fields,
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
                # the vector the model scored (a base-rate answer scored none)
                if served is not None and read.prior is None and _sampled(
                        answer["request_id"], self.settings.log_features_rate):
                    record["features"] = row
                    record["feature_service"] = served.model.artifact.feature_service
                    record["as_of"] = _iso_us(read.as_of_us)
                    if read.as_of_event_id is not None:
                        record["as_of_event_id"] = read.as_of_event_id
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
        out["offers"] = self.offers.to_json()
        out["preference_version"] = self.preference.version if self.preference else None
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


def _outage(layout: FeatureLayout, event: tuple | None) -> _Read:
    """The answer's features when Redis cannot be read: the base rate of what the request
    stands for (a scoring moment when it carries its event, else a session) answers."""
    return _Read(defaults_row(layout), [], [FALLBACK_REDIS],
                 PRIOR_MOMENT if event is not None else PRIOR_SESSION)


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
