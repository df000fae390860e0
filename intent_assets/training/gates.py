"""The publication gates: what a calibrated model must pass before it may replace the champion.

Each gate is a pure function returning `(passed, metadata)`; the blocking asset checks in
`checks` wrap them.
A gate never passes on a metric it could not evaluate (None or NaN fails).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from intent_assets.reports.metrics import MISSING_SEGMENT, NOISE_DRAWS, NOISE_QUANTILE, ece_noise

PR_AUC_TOLERANCE = 0.01
MAX_ECE = 0.02
SEGMENT_MAX_ECE = 0.05
LEAKAGE_MAX_AUC = 0.99
LEAKAGE_SAMPLE_ROWS = 200_000

# Columns of the sessions and orders tables that describe a whole session or its outcome. Each is
# known only once the session is over, so as a feature of a mid-session snapshot it sees the future.
OUTCOME_COLUMNS: frozenset[str] = frozenset({
    "label", "purchased_in_session", "first_purchase_time", "n_purchases", "revenue",
    "end_time", "duration_s", "n_events", "n_views", "n_carts", "n_removes", "n_searches",
    "n_page_views", "n_checkouts", "order_id", "order_time", "n_items", "has_coupon",
    "is_trainable",
})
_LABELISH = re.compile(r"(^|_)(label|target)(_|$)")

GateResult = tuple[bool, dict[str, Any]]


def _defined(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def pr_auc_gate(candidate: float | None, champion: float | None,
                tolerance: float = PR_AUC_TOLERANCE) -> GateResult:
    """PR-AUC not worse than the champion's beyond `tolerance`; passes when there is no champion."""
    meta: dict[str, Any] = {"candidate_pr_auc": candidate, "champion_pr_auc": champion,
                            "tolerance": tolerance}
    if not _defined(candidate):
        return False, {**meta, "reason": "candidate PR-AUC is undefined"}
    if not _defined(champion):
        return True, {**meta, "reason": "no champion to compare with"}
    threshold = champion - tolerance
    passed = candidate >= threshold
    return bool(passed), {**meta, "threshold": threshold, "difference": candidate - champion,
                          "reason": "within tolerance of the champion" if passed
                          else "worse than the champion beyond the tolerance"}


def _segment_rows(segment_table) -> list[dict[str, Any]]:
    if segment_table is None:
        return []
    if isinstance(segment_table, pd.DataFrame):
        return segment_table.to_dict("records")
    return [dict(r) for r in segment_table]


def ece_bound(max_ece: float, noise_quantile: float | None) -> float:
    """The ECE a model may show: `max_ece`, or the test set's noise floor when that is higher.

    A perfectly calibrated model shows ECE above zero from sampling alone, more so on a small
    test set (`metrics.ece_noise`: the 95th percentile over label draws from the model's own
    probabilities). Below that quantile the test set cannot tell the model from a calibrated
    one, so blocking it there would judge the noise; above both bounds it is miscalibrated.
    """
    return max(max_ece, noise_quantile) if _defined(noise_quantile) else max_ece


def ece_gate(overall_ece: float | None, segment_table: Iterable[Mapping[str, Any]] | pd.DataFrame | None,
             max_ece: float = MAX_ECE, segment_max_ece: float = SEGMENT_MAX_ECE,
             noise: Mapping[str, Any] | None = None) -> GateResult:
    """ECE within its bound overall and in every segment with enough data (see `ece_bound`).

    `segment_table` is the output of `metrics.segment_metrics` (rows with column, value, ece,
    enough_data), as a list of dicts or a DataFrame. Segments without enough data are listed but
    not judged. `noise` holds `metrics.ece_noise` results: "overall", and "segments" keyed
    "column=value"; without it the bounds are `max_ece` and `segment_max_ece` as they are.
    """
    noise = noise or {}
    segment_noise = noise.get("segments") or {}
    rows = _segment_rows(segment_table)
    judged = [r for r in rows if r.get("enough_data")]

    def segment_bound(r) -> float:
        floor = (segment_noise.get(f"{r.get('column')}={r.get('value')}") or {}).get("quantile")
        return ece_bound(segment_max_ece, floor)

    failing = [{"column": r.get("column"), "value": r.get("value"), "ece": r.get("ece"),
                "rows": r.get("rows"), "bound": segment_bound(r)}
               for r in judged if not _defined(r.get("ece")) or r["ece"] > segment_bound(r)]
    overall_noise = (noise.get("overall") or {}).get("quantile")
    bound = ece_bound(max_ece, overall_noise)
    overall_ok = _defined(overall_ece) and overall_ece <= bound
    worst = max(judged, key=lambda r: r["ece"] if _defined(r.get("ece")) else math.inf, default=None)
    meta = {
        "overall_ece": overall_ece, "max_ece": max_ece,
        "noise_ece_q95": overall_noise, "noise_ece_mean": (noise.get("overall") or {}).get("mean"),
        "ece_bound": bound, "overall_within_bound": bool(overall_ok),
        "rule": "ECE ≤ max(max_ece, 95th percentile of a calibrated model's ECE on these rows); "
                "each judged segment's percentile is 1 − 0.05 / segments (Bonferroni)",
        "segment_max_ece": segment_max_ece, "segments_judged": len(judged),
        "segments_skipped_for_little_data": len(rows) - len(judged),
        "failing_segments": failing,
        "worst_segment": None if worst is None else
        {"column": worst.get("column"), "value": worst.get("value"), "ece": worst.get("ece")},
    }
    return bool(overall_ok and not failing), meta


def calibration_noise(test: pd.DataFrame, segment_table=None, probability: str = "probability",
                      weight: str = "weight", group: str = "session_id") -> dict[str, Any]:
    """`ece_gate`'s `noise`: ECE's noise floor on the test rows overall and in each judged segment.

    The overall floor is the 95th percentile. The k judged segments are k tests at once: at 95 %
    each, a calibrated model would fail one of 16 small segments more often than not. Each
    segment's floor is therefore its 1 − 0.05 / k quantile (Bonferroni), so a calibrated model
    passes all of them together at least 95 % of the time, with draws enough to resolve that tail.
    """
    groups = test[group] if group in test else None

    def of(rows: pd.DataFrame, **kwargs) -> dict:
        return ece_noise(rows[probability].to_numpy(), rows[weight].to_numpy(),
                         None if groups is None else rows[group].to_numpy(), **kwargs)

    judged = [r for r in _segment_rows(segment_table)
              if r.get("enough_data") and r.get("column") in test]
    tail = (1.0 - NOISE_QUANTILE) / max(len(judged), 1)
    per_segment = {"quantile": 1.0 - tail, "draws": max(NOISE_DRAWS, math.ceil(10 / tail))}
    segments = {}
    for r in judged:
        column, value = r.get("column"), r.get("value")
        values = test[column].astype(object).where(test[column].notna(), MISSING_SEGMENT)
        segments[f"{column}={value}"] = of(test[values.astype(str) == value], **per_segment)
    return {"overall": of(test), "segments": segments}


def beats_baseline_gate(candidate_pr_auc: float | None, logistic_pr_auc: float | None,
                        margin: float = 0.0) -> GateResult:
    """The candidate's PR-AUC is above logistic regression's (by more than `margin`)."""
    meta = {"candidate_pr_auc": candidate_pr_auc, "logistic_pr_auc": logistic_pr_auc,
            "margin": margin}
    if not (_defined(candidate_pr_auc) and _defined(logistic_pr_auc)):
        return False, {**meta, "reason": "a PR-AUC is undefined"}
    return bool(candidate_pr_auc > logistic_pr_auc + margin), {
        **meta, "difference": candidate_pr_auc - logistic_pr_auc}


def leakage_gate(flags: list[str]) -> GateResult:
    """Fails when any leakage flag is raised."""
    return not flags, {"leakage_flags": list(flags), "n_flags": len(flags)}


def _numeric_score(values: pd.Series) -> np.ndarray | None:
    """A number, timestamp or bool feature as floats; None when constant.

    Missing values get a value below every other, since missingness itself can leak (a time
    that exists only for buyers).
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        t = pd.to_datetime(values, utc=True)
        x = ((t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(
            dtype=np.float64, na_value=np.nan)
    else:
        x = pd.to_numeric(values, errors="coerce").astype(np.float64).to_numpy()
    nan = np.isnan(x)
    if nan.all():
        return None
    x = np.where(nan, np.nanmin(x) - 1.0, x)
    return None if np.ptp(x) == 0 else x


def _category_score(values: pd.Series, y: np.ndarray, folds: np.ndarray) -> np.ndarray | None:
    """A string feature scored by its category's positive rate in the other fold; None if constant.

    Out-of-fold, so a many-valued honest column (product ids) is not mistaken for a leak just
    because each rare value fits its own few rows; a value that pins down the outcome across
    rows (a session id shared by one session's snapshots) still separates.
    """
    keys = values.astype(object).where(values.notna(), "(missing)").astype(str).to_numpy()
    if len(set(keys)) < 2:
        return None
    x = np.empty(len(keys))
    for k in (0, 1):
        fit, apply = folds != k, folds == k
        rates = pd.Series(y[fit]).groupby(keys[fit]).mean()
        x[apply] = pd.Series(keys[apply]).map(rates).fillna(y[fit].mean()).to_numpy()
    return None if np.ptp(x) == 0 else x


def feature_separation(train_df: pd.DataFrame, feature_columns: list[str], label: str,
                       weight_column: str | None = None, max_rows: int = LEAKAGE_SAMPLE_ROWS,
                       seed: int = 0) -> dict[str, float | None]:
    """How well each feature alone separates the classes: max(AUC, 1 − AUC), None if constant.

    Numbers and timestamps are scores as they are; strings score by their category's positive
    rate in the other half of a seeded two-fold split. Large tables are sampled to `max_rows`
    rows with `seed`.
    """
    df = train_df
    if len(df) > max_rows:
        df = df.sample(n=max_rows, random_state=seed)
    y = df[label].to_numpy(dtype=np.float64)
    w = None if weight_column is None else df[weight_column].to_numpy(dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("leakage check needs both classes")
    folds = np.random.default_rng(seed).integers(0, 2, len(df))
    out: dict[str, float | None] = {}
    for c in feature_columns:
        values = df[c]
        numeric = (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
                   or pd.api.types.is_datetime64_any_dtype(values))
        x = _numeric_score(values) if numeric else _category_score(values, y, folds)
        if x is None:
            out[c] = None
            continue
        auc = float(roc_auc_score(y, x, sample_weight=w))
        out[c] = max(auc, 1.0 - auc)
    return out


def leakage_flags(train_df: pd.DataFrame, feature_columns: list[str], label: str,
                  weight_column: str | None = None, max_auc: float = LEAKAGE_MAX_AUC,
                  seed: int = 0) -> list[str]:
    """Heuristic leakage warnings: outcome-named features and near-perfect single-feature separation.

    A feature is flagged when it is the label, is named like a label/target, is a whole-session
    or order outcome column (OUTCOME_COLUMNS), or alone separates the classes with
    ROC-AUC ≥ `max_auc`. An outcome-named feature that is constant in training carries no
    information and is not flagged.
    """
    flags = []
    separation = feature_separation(train_df, feature_columns, label, weight_column, seed=seed)
    for c in feature_columns:
        named = c == label or c in OUTCOME_COLUMNS or bool(_LABELISH.search(c))
        if named and separation[c] is not None:
            flags.append(f"{c}: named like an outcome column (label {label!r})")
        elif separation[c] is not None and separation[c] >= max_auc:
            flags.append(f"{c}: separates the label alone (ROC-AUC {separation[c]:.4f} ≥ {max_auc})")
    return flags
