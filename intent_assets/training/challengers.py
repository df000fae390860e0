"""Challengers: the other families and their ensemble, trained and measured like the LightGBM model.

`fit_challengers` tunes each family with `train.fit_tuned` (same splits, features, downsampling
and trial budget as LightGBM) and adds a weighted ensemble of the best members; `finish_candidate`
calibrates, tests and saves any of them with `train.finish_model` (the same calibrator choice,
metrics and artifact), then measures what serving pays for it: single-row scoring latency with
reasons, and the archive's size.

The ensemble's weights are fitted on the validation split only: on each member's validation
margins from its best tuning trial, a model that learned from the train split alone. Its
calibrator is then fitted on the calibration split like any model's, and the test split is
scored once, at the end.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from intent_assets.reports.metrics import pr_auc
from intent_assets.training.result import TrainResult, TunedModel
from intent_assets.training.table import design
from intent_assets.training.train import finish_model, fit_tuned, make_splits
from intent_assets.training.tuning import TuningResult
from serving.calibration import Calibrator
from serving.families import ENSEMBLE, EnsembleModel
from serving.model import ModelArtifact, Vectorizer

ENSEMBLE_MEMBERS = 3
LATENCY_ROWS = 200


def fit_ensemble_weights(margins: Mapping[str, np.ndarray], y, w=None) -> dict[str, float]:
    """Non-negative weights on members' margins: the weighted logistic fit
    sigmoid(b + sum_k weight_k * margin_k) of the label with the lowest log loss.

    Called with validation margins and labels only; the intercept is dropped afterwards (the
    calibrator, fitted on the calibration split, sets the level)."""
    from scipy.optimize import minimize

    names = list(margins)
    M = np.column_stack([np.asarray(margins[n], dtype=np.float64) for n in names])
    y = np.asarray(y, dtype=np.float64)
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=np.float64)
    w = w / w.sum()

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = M @ theta[:-1] + theta[-1]
        p = 1.0 / (1.0 + np.exp(-z))
        value = float(np.sum(w * (np.logaddexp(0.0, z) - y * z)))
        g = w * (p - y)
        return value, np.append(M.T @ g, g.sum())

    start = np.append(np.full(len(names), 1.0 / len(names)), 0.0)
    fitted = minimize(loss, start, jac=True, method="L-BFGS-B",
                      bounds=[(0.0, None)] * len(names) + [(None, None)])
    return {n: float(v) for n, v in zip(names, fitted.x[:-1])}


def fit_ensemble(members: Mapping[str, TunedModel], df: pd.DataFrame,
                 max_members: int = ENSEMBLE_MEMBERS) -> TunedModel:
    """The weighted ensemble of the `max_members` members best on validation PR-AUC."""
    started = time.perf_counter()
    usable = {f: t for f, t in members.items() if t.validation_margin is not None}
    if len(usable) < 2:
        raise ValueError("an ensemble needs at least two members with validation margins")
    ranked = sorted(usable, key=lambda f: -usable[f].tuning.best_pr_auc)[:max_members]
    first = usable[ranked[0]]
    splits = make_splits(df, first.label, first.time_column, first.group_column, first.seed)
    valid = design(Vectorizer(first.features), splits.validation, first.label,
                   first.weight_column)
    margins = {f: usable[f].validation_margin for f in ranked}
    weights = fit_ensemble_weights(margins, valid.y, valid.w)
    kept = [f for f in ranked if weights[f] > 0]
    record = {"weights_fitted_on": "validation", "validation_rows": int(len(valid.y)),
              "candidates": ranked, "weights": {f: weights[f] for f in ranked}}
    used = {f: weights[f] for f in kept}
    if not kept:  # no member's margin rises with the label on validation: the best one alone
        used = {ranked[0]: 1.0}
        record["note"] = "every fitted weight was 0; the best member alone"
    combined = sum(w * margins[f] for f, w in used.items())
    model = EnsembleModel([usable[f].model for f in used], list(used.values()), record)
    score = float(pr_auc(valid.y, Calibrator("none").apply(combined), valid.w) or float("nan"))
    tuning = TuningResult(best_params={"weights": record["weights"]}, best_pr_auc=score,
                          best_iteration=0, history=[])
    seconds = {"prepare": 0.0, "tuning": 0.0,
               "final_fit": round(time.perf_counter() - started, 3),
               "members": round(sum(sum(usable[f].seconds.values()) for f in used), 3)}
    return replace(first, booster=model, family=ENSEMBLE, tuning=tuning,
                   params={"weights": record["weights"], "members": list(used)}, seconds=seconds,
                   validation_margin=combined)


def fit_challengers(df: pd.DataFrame, label: str, families: Sequence[str], *,
                    lightgbm: TunedModel | None = None, ensemble: bool = True,
                    **fit_args) -> dict[str, TunedModel]:
    """Each family tuned by `fit_tuned(family=...)`, plus the ensemble of the best (with the
    LightGBM model among its candidates when given)."""
    tuned: dict[str, TunedModel] = {}
    if lightgbm is not None:
        tuned["lightgbm"] = lightgbm
    for family in families:
        if family in tuned:
            continue
        tuned[family] = fit_tuned(df, label, family=family, **fit_args)
    if ensemble and sum(t.validation_margin is not None for t in tuned.values()) >= 2:
        tuned[ENSEMBLE] = fit_ensemble(tuned, df)
    return tuned


@dataclass(frozen=True)
class Candidate:
    """A finished candidate: its artifact and test figures, and what serving it costs."""

    family: str
    result: TrainResult
    training_seconds: float
    latency_ms: dict
    artifact_bytes: int


def scoring_latency(artifact: ModelArtifact, rows: pd.DataFrame, top_k: int = 3,
                    n: int = LATENCY_ROWS) -> dict:
    """Single-row scoring with `top_k` reasons in process (`score_one`, the container's path
    for one row): p50 and p99 in milliseconds over up to `n` rows, after one warm-up."""
    records = rows.head(n).to_dict("records")
    if not records:
        return {"p50": None, "p99": None, "rows": 0}
    artifact.score_one(records[0], top_k=top_k)
    took = []
    for record in records:
        started = time.perf_counter()
        artifact.score_one(record, top_k=top_k)
        took.append((time.perf_counter() - started) * 1e3)
    return {"p50": float(np.percentile(took, 50)), "p99": float(np.percentile(took, 99)),
            "rows": len(took), "top_k": top_k}


def finish_candidate(tuned: TunedModel, df: pd.DataFrame, out_dir: str | Path, **kwargs
                     ) -> Candidate:
    """Calibrate, test and save one candidate (`train.finish_model`), then time its scoring."""
    result = finish_model(tuned, df, out_dir, **kwargs)
    artifact = ModelArtifact.load(result.artifact_dir)
    latency = scoring_latency(artifact, result.test_predictions)
    return Candidate(tuned.family, result,
                     round(sum(tuned.seconds.values()) + result.seconds.get(
                         "calibrate_and_evaluate", 0.0), 3),
                     latency, int(Path(result.tar_path).stat().st_size))
