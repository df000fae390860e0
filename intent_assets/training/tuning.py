"""The hyperparameter search: one search space, searched by Optuna locally or by SageMaker AMT.

`SEARCH_SPACE` is the single definition. `resolve` turns its relative bounds into numbers for a
given training set; `suggest` samples it in an Optuna trial; `to_sagemaker_parameter_ranges`
writes it as the `ParameterRanges` of a SageMaker tuning job. Both searches maximise PR-AUC
(weighted average precision) on the validation split, with LightGBM stopping early on it.

Choices, and why:
- `scale_pos_weight` is log-uniform in [0.25, 4] x (weighted negatives / weighted positives):
  the balancing weight is the centre, a factor of four either way lets the search find that a
  ranking objective prefers lighter or heavier up-weighting. Calibration undoes the shift in
  probabilities it causes.
- `num_iterations` is an upper bound (early stopping picks the count); 100-800 with a learning
  rate of 0.03-0.3 covers a few hundred effective trees, which keeps a single-row prediction
  and its path-attribution reasons within the scoring API's budget.
- `num_leaves` 15-127 with `max_depth` 3-12: deep enough for the interactions of the funnel
  features, small enough to explain quickly.
- `min_data_in_leaf` 20-400 (log): leaves of rare behaviours need rows behind them.
- `feature_fraction` / `bagging_fraction` 0.5-1.0 (bagging every iteration), `lambda_l1` /
  `lambda_l2` 1e-3-10 (log).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import lightgbm as lgb
import numpy as np

from intent_assets.reports.metrics import pr_auc

EARLY_STOPPING_ROUNDS = 50


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: kind, bounds, log scale, and what the bounds multiply."""

    name: str
    kind: str  # "int" | "float"
    low: float
    high: float
    log: bool = False
    # "neg_pos_ratio": low and high are multiples of weighted negatives / weighted positives
    relative_to: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("int", "float"):
            raise ValueError(f"{self.name}: kind must be int or float")
        if not self.low <= self.high:
            raise ValueError(f"{self.name}: low must not exceed high")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.name}: a log scale needs a positive low bound")


SEARCH_SPACE: tuple[Param, ...] = (
    Param("num_leaves", "int", 15, 127, log=True),
    Param("max_depth", "int", 3, 12),
    Param("min_data_in_leaf", "int", 20, 400, log=True),
    Param("learning_rate", "float", 0.03, 0.3, log=True),
    Param("num_iterations", "int", 100, 800, log=True),
    Param("feature_fraction", "float", 0.5, 1.0),
    Param("bagging_fraction", "float", 0.5, 1.0),
    Param("lambda_l1", "float", 1e-3, 10.0, log=True),
    Param("lambda_l2", "float", 1e-3, 10.0, log=True),
    Param("scale_pos_weight", "float", 0.25, 4.0, log=True, relative_to="neg_pos_ratio"),
)

# Not searched. `feature_pre_filter` off because min_data_in_leaf changes between trials on one
# Dataset; `bagging_freq` 1 so bagging_fraction takes effect; deterministic for fixed seeds.
FIXED_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "metric": "average_precision",
    "boosting": "gbdt",
    "bagging_freq": 1,
    "feature_pre_filter": False,
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}


def seeded_params(seed: int) -> dict[str, Any]:
    """Every LightGBM seed derived from one."""
    return {"seed": seed, "bagging_seed": seed + 1, "feature_fraction_seed": seed + 2,
            "data_random_seed": seed + 3}


def neg_pos_ratio(y: np.ndarray, w: np.ndarray | None = None) -> float:
    """Weighted negatives over weighted positives."""
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
    pos = float(np.sum(w * y))
    if pos <= 0:
        raise ValueError("the training split has no positives")
    return float(np.sum(w * (1 - y))) / pos


def resolve(space: tuple[Param, ...], ratio: float) -> tuple[Param, ...]:
    """The space with relative bounds turned into numbers for a training set's class ratio."""
    out = []
    for p in space:
        if p.relative_to == "neg_pos_ratio":
            p = replace(p, low=p.low * ratio, high=p.high * ratio, relative_to=None)
        elif p.relative_to is not None:
            raise ValueError(f"{p.name}: unknown relative_to {p.relative_to!r}")
        out.append(p)
    return tuple(out)


def suggest(trial, space: tuple[Param, ...]) -> dict[str, Any]:
    """Sample a resolved space in an Optuna trial."""
    params: dict[str, Any] = {}
    for p in space:
        if p.relative_to is not None:
            raise ValueError(f"{p.name}: resolve the space before sampling it")
        if p.kind == "int":
            params[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            params[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
    return params


def to_sagemaker_parameter_ranges(space: tuple[Param, ...],
                                  ratio: float | None = None) -> dict[str, list]:
    """The space as SageMaker AMT `HyperParameterTuningJobConfig.ParameterRanges` (boto3).

    Relative bounds need the training set's class `ratio` (SageMaker cannot compute it).
    """
    if any(p.relative_to for p in space):
        if ratio is None:
            raise ValueError("the space has bounds relative to the class ratio: pass ratio")
        space = resolve(space, ratio)
    ranges: dict[str, list] = {"IntegerParameterRanges": [], "ContinuousParameterRanges": [],
                               "CategoricalParameterRanges": []}
    for p in space:
        scaling = "Logarithmic" if p.log else "Linear"
        if p.kind == "int":
            ranges["IntegerParameterRanges"].append({
                "Name": p.name, "MinValue": str(int(p.low)), "MaxValue": str(int(p.high)),
                "ScalingType": scaling})
        else:
            ranges["ContinuousParameterRanges"].append({
                "Name": p.name, "MinValue": _number(p.low), "MaxValue": _number(p.high),
                "ScalingType": scaling})
    return ranges


def _number(x: float) -> str:
    return repr(float(x))


# -- fitting -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DesignMatrix:
    """A split as LightGBM input: features, labels, weights, feature names, categorical indices."""

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    feature_names: tuple[str, ...]
    categorical: tuple[int, ...] = ()

    def dataset(self, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(self.X, label=self.y, weight=self.w,
                           feature_name=list(self.feature_names),
                           categorical_feature=list(self.categorical) or "auto",
                           reference=reference, free_raw_data=False)


def lgb_params(sampled: dict[str, Any], seed: int) -> dict[str, Any]:
    """Full LightGBM parameters: fixed ones, seeds, then the sampled ones."""
    return {**FIXED_PARAMS, **seeded_params(seed), **sampled}


def fit(params: dict[str, Any], train: DesignMatrix, valid: DesignMatrix | None = None,
        early_stopping_rounds: int = EARLY_STOPPING_ROUNDS,
        datasets: tuple[lgb.Dataset, lgb.Dataset | None] | None = None) -> lgb.Booster:
    """Train a booster; with `valid`, stop when its PR-AUC has not improved for a while."""
    params = dict(params)
    rounds = int(params.pop("num_iterations", 100))
    dtrain, dvalid = datasets or (train.dataset(), None)
    if valid is not None and dvalid is None:
        dvalid = valid.dataset(reference=dtrain)
    callbacks = []
    valid_sets = []
    if dvalid is not None:
        valid_sets = [dvalid]
        callbacks.append(lgb.early_stopping(early_stopping_rounds, first_metric_only=True,
                                            verbose=False))
    return lgb.train(params, dtrain, num_boost_round=rounds, valid_sets=valid_sets,
                     valid_names=["validation"] if valid_sets else None, callbacks=callbacks)


@dataclass(frozen=True)
class TuningResult:
    """The best parameters (num_iterations = the early-stopped count), its PR-AUC, all trials."""

    best_params: dict[str, Any]
    best_pr_auc: float
    best_iteration: int
    history: list[dict] = field(default_factory=list)
    space: tuple[Param, ...] = ()
    # the best trial's validation margins (kept between assets by `TunedModel`, not in JSON)
    validation_margin: np.ndarray | None = field(default=None, repr=False, compare=False)
    # where the search ran, when not in process (the SageMaker tuning job, its best artifact)
    source: dict = field(default_factory=dict)


def tune_optuna(train: DesignMatrix, valid: DesignMatrix, space: tuple[Param, ...] = SEARCH_SPACE,
                n_trials: int = 20, seed: int = 0,
                early_stopping_rounds: int = EARLY_STOPPING_ROUNDS) -> TuningResult:
    """Search the space with seeded Optuna TPE; objective: weighted PR-AUC on `valid`."""
    import optuna

    if n_trials < 1:
        raise ValueError("n_trials must be at least 1")
    resolved = resolve(space, neg_pos_ratio(train.y, train.w))
    dtrain = train.dataset()
    dvalid = valid.dataset(reference=dtrain)
    history: list[dict] = []
    best: dict[str, Any] = {"score": -np.inf, "booster": None, "iteration": 0}

    def objective(trial) -> float:
        sampled = suggest(trial, resolved)
        started = time.perf_counter()
        booster = fit(lgb_params(sampled, seed), train, valid, early_stopping_rounds,
                      datasets=(dtrain, dvalid))
        best_iteration = booster.best_iteration or booster.current_iteration()
        # probabilities, not margins: the same ranking, and what the metric expects
        score = pr_auc(valid.y, booster.predict(valid.X, num_iteration=best_iteration), valid.w)
        if score is None:
            raise ValueError("the validation split has no positives: PR-AUC is undefined")
        trial.set_user_attr("best_iteration", int(best_iteration))
        history.append({"trial": trial.number, "pr_auc": float(score),
                        "best_iteration": int(best_iteration),
                        "seconds": round(time.perf_counter() - started, 3), "params": sampled})
        if score > best["score"]:
            best.update(score=score, booster=booster, iteration=best_iteration)
        return score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    trial = study.best_trial
    best_iteration = int(trial.user_attrs["best_iteration"])
    best_params = {**trial.params, "num_iterations": best_iteration}
    margin = best["booster"].predict(valid.X, raw_score=True, num_iteration=best["iteration"])
    return TuningResult(best_params=best_params, best_pr_auc=float(trial.value),
                        best_iteration=best_iteration, history=history, space=resolved,
                        validation_margin=np.asarray(margin, dtype=np.float64))


def space_to_json(space: tuple[Param, ...]) -> list[dict]:
    """The space as plain dicts, for metadata."""
    return [{"name": p.name, "kind": p.kind, "low": p.low, "high": p.high, "log": p.log,
             **({"relative_to": p.relative_to} if p.relative_to else {})} for p in space]


def space_from_json(items: list[dict]) -> tuple[Param, ...]:
    return tuple(Param(**item) for item in items)


def tuning_to_json(result: TuningResult) -> dict:
    """A TuningResult as plain JSON (to keep it between assets)."""
    return {"best_params": result.best_params, "best_pr_auc": result.best_pr_auc,
            "best_iteration": result.best_iteration, "history": result.history,
            "space": space_to_json(result.space), "source": result.source}


def tuning_from_json(data: dict) -> TuningResult:
    return TuningResult(best_params=dict(data["best_params"]),
                        best_pr_auc=float(data["best_pr_auc"]),
                        best_iteration=int(data["best_iteration"]),
                        history=list(data.get("history", [])),
                        space=space_from_json(data.get("space", [])),
                        source=dict(data.get("source") or {}))
