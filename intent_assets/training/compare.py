"""`intent train --families ...`: the family comparison and the champion rule on any table.

The same code as the graph's chain: LightGBM through `train.fit_tuned` (its regime chosen as
`intent train` chooses it), every other family through `challengers`, logistic regression on the
same train split as the baseline to beat, each candidate judged by `champion.judge` on its test
predictions. Each candidate's artifact goes to `<out>/<family>/`; the champion's is copied to
`<out>/` itself, where `intent train` without `--families` writes its model.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from intent_assets.reports.baselines import fit_logistic_baseline
from intent_assets.reports.metrics import SEGMENT_COLUMNS, evaluate
from intent_assets.training import champion
from intent_assets.training.challengers import finish_candidate, fit_challengers
from intent_assets.training.families import CHALLENGERS
from intent_assets.training.table import id_columns
from intent_assets.training.train import fit_tuned, make_splits
from serving.families import LIGHTGBM

KNOWN_FAMILIES = (LIGHTGBM, *CHALLENGERS)


def parse_families(text: str) -> list[str]:
    """A comma-separated family list, checked ("all": every family)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(KNOWN_FAMILIES)
    unknown = [n for n in names if n not in KNOWN_FAMILIES]
    if unknown or not names:
        raise ValueError(f"unknown model families {unknown}; choose among "
                         f"{', '.join(KNOWN_FAMILIES)} (or all)")
    return names


def compare_families(df: pd.DataFrame, label: str, families: Sequence[str], out_dir: Path, *,
                     time_column: str | None, weight_column: str | None, group_column: str | None,
                     n_trials: int, seed: int, regime: str, feature_service: str,
                     ensemble: bool = True) -> dict:
    """Train every family (and the ensemble), judge each, copy the champion to `out_dir`."""
    common = dict(time_column=time_column, n_trials=n_trials, seed=seed,
                  weight_column=weight_column, group_column=group_column,
                  feature_service=feature_service)
    lightgbm = fit_tuned(df, label, regime=regime, **common) if LIGHTGBM in families else None
    tuned = fit_challengers(df, label, [f for f in families if f != LIGHTGBM],
                            lightgbm=lightgbm, ensemble=ensemble and len(families) > 1,
                            regime="holdout", **common)
    splits = make_splits(df, label, time_column, group_column if group_column in df else None,
                         seed)
    features = [c for c in df.columns if c not in id_columns(df.columns, label, time_column,
                                                             weight_column)]
    weights = weight_column if weight_column in df.columns else None
    logistic = fit_logistic_baseline(splits.train, label, features, weight_column=weights)
    test = splits.test
    w = test[weights].to_numpy() if weights else None
    logistic_pr_auc = evaluate(test[label].to_numpy(), logistic.predict(test), w)["pr_auc"]
    candidates = []
    for family, model in tuned.items():
        done = finish_candidate(model, df, out_dir / family, versioned=False)
        predictions = done.result.test_predictions.rename(columns={label: "label"})
        if weights is None:
            predictions = predictions.assign(weight=1.0)
        else:
            predictions = predictions.rename(columns={weights: "weight"})
        if "session_id" not in predictions and group_column in predictions:
            predictions = predictions.assign(session_id=predictions[group_column])
        segments = predictions[[c for c in SEGMENT_COLUMNS if c in predictions]]
        metrics = evaluate(predictions["label"].to_numpy(), predictions["probability"].to_numpy(),
                           predictions["weight"].to_numpy(), segments)
        candidate = {"family": family, "version": done.result.version, "metrics": metrics,
                     "segments": metrics["segments"], "latency_ms": done.latency_ms,
                     "training_seconds": done.training_seconds,
                     "artifact_bytes": done.artifact_bytes,
                     "artifact_dir": str(done.result.artifact_dir)}
        candidate["gates"] = champion.judge(candidate, predictions, logistic_pr_auc)
        candidates.append(candidate)
    winner = champion.choose(candidates)
    rows = champion.comparison_rows(candidates, winner)
    for row, c in zip(rows, candidates):
        row.update({k: c["metrics"].get(k) for k in ("roc_auc", "log_loss", "brier_skill",
                                                      "precision_at_5pct", "precision_at_10pct",
                                                      "precision_at_20pct")})
    chosen = None
    if winner is not None:
        chosen = candidates[winner]
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in Path(chosen["artifact_dir"]).iterdir():
            if f.is_file():
                shutil.copy2(f, out_dir / f.name)
    return {"champion": None if chosen is None else chosen["family"],
            "champion_artifact": None if chosen is None else str(out_dir),
            "logistic_pr_auc": logistic_pr_auc, "candidates": rows}
