"""The scoring API's settings: read from INTENT_* environment variables, or given directly.

Read when the app is built (`ApiSettings.from_env`), never at import time; docs/serving.md lists
every variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from serving.experiments import ExperimentDesign
from serving.offers import POLICIES, ExplorationSlice
from serving.policy import PolicyParams
from serving.project import intent_home, redis_url
from serving.scoring import LOG_FEATURES_RATE, ScoringSettings


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
    exploration: ExplorationSlice = field(default_factory=ExplorationSlice)
    uplift_model_path: Optional[str] = None
    offer_policy: str = "model"   # without an experiment: `model` (bands) or `uplift`
    preference_path: Optional[str] = None   # the upsell's category ranker (`serving.preference`)
    # where the two paths above, when they are s3:// URIs, are downloaded at startup
    artifact_cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.offer_policy not in POLICIES:
            raise ValueError(f"INTENT_OFFER_POLICY must be one of {POLICIES}, got {self.offer_policy!r}")

    @classmethod
    def from_env(cls, env: Optional[dict[str, str]] = None, **overrides: Any) -> "ApiSettings":
        """Settings from INTENT_* variables (docs/serving.md lists them)."""
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
            log_features_rate=number("INTENT_LOG_FEATURES_RATE", LOG_FEATURES_RATE),
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
        # the artifact store the pipeline writes: S3 in prod (INTENT_MODELS_URI)
        models = env.get("INTENT_MODELS_URI") or str(home / "models")
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
            exploration=ExplorationSlice(number("INTENT_EXPLORATION_SHARE", 0.0),
                                         env.get("INTENT_EXPLORATION_SALT") or "exploration"),
            uplift_model_path=env.get("INTENT_UPLIFT_MODEL_PATH") or f"{models}/uplift/current",
            offer_policy=env.get("INTENT_OFFER_POLICY", "model"),
            preference_path=env.get("INTENT_PREFERENCE_PATH") or f"{models}/preference/current",
            artifact_cache_dir=str(home / "artifact_cache"),
        )
        values.update(overrides)
        return cls(**values)
