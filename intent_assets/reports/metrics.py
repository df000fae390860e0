"""Weighted evaluation metrics of a binary probability: ranking, calibration, top-k and segments.

Every metric takes sample weights. Training examples are sessions cut at several scoring moments,
and each session's snapshots weigh 1 in total, so a weighted metric counts every session once
however many moments it was scored at. Weights default to 1 per row.

Results are JSON-friendly: plain floats and ints, lists of dicts for tables, and None where a
metric is undefined (ROC-AUC without both classes, Brier skill against a constant label).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (average_precision_score, brier_score_loss, log_loss,
                             roc_auc_score)

N_BINS = 15
TOP_FRACTIONS: tuple[float, ...] = (0.05, 0.10, 0.20)
N_LIFT_BUCKETS = 10
# A segment's calibration is judged (and gated) only with this much evidence; below it one
# unlucky day moves its ECE by more than the gate's bound.
MIN_SEGMENT_ROWS = 500
MIN_SEGMENT_POSITIVES = 20
SEGMENT_COLUMNS: tuple[str, ...] = ("session_device", "session_country", "session_traffic_source")
MISSING_SEGMENT = "(missing)"


def as_arrays(y, p=None, w=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities and weights as validated float arrays of one length.

    Without `p` (only labels and weights needed) the probabilities come back as zeros.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.zeros_like(y) if p is None else np.asarray(p, dtype=np.float64).ravel()
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64).ravel()
    if not (len(y) == len(p) == len(w)):
        raise ValueError(f"lengths differ: y {len(y)}, p {len(p)}, w {len(w)}")
    if len(y) == 0:
        raise ValueError("no rows to evaluate")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be finite and within [0, 1]")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return y, p, w


def _both_classes(y: np.ndarray, w: np.ndarray) -> bool:
    return bool(w[y == 1].sum() > 0 and w[y == 0].sum() > 0)


def base_rate(y, w=None) -> float:
    """The weighted share of positives."""
    y, _, w = as_arrays(y, None, w)
    return float(np.average(y, weights=w))


def pr_auc(y, p, w=None) -> float | None:
    """Weighted average precision (area under the precision-recall curve); None without positives."""
    y, p, w = as_arrays(y, p, w)
    if not w[y == 1].sum() > 0:
        return None
    return float(average_precision_score(y, p, sample_weight=w))


def roc_auc(y, p, w=None) -> float | None:
    """Weighted ROC-AUC; None unless both classes are present."""
    y, p, w = as_arrays(y, p, w)
    if not _both_classes(y, w):
        return None
    return float(roc_auc_score(y, p, sample_weight=w))


def weighted_log_loss(y, p, w=None) -> float:
    """Weighted mean negative log-likelihood (probabilities clipped away from 0 and 1)."""
    y, p, w = as_arrays(y, p, w)
    return float(log_loss(y, p, sample_weight=w, labels=[0, 1]))


def brier(y, p, w=None) -> float:
    """Weighted mean squared error of the probability."""
    y, p, w = as_arrays(y, p, w)
    return float(brier_score_loss(y, p, sample_weight=w, labels=[0, 1]))


def brier_skill(y, p, w=None) -> dict[str, float | None]:
    """Brier, the Brier of always predicting the weighted base rate, and the skill 1 − ratio."""
    y, p, w = as_arrays(y, p, w)
    rate = float(np.average(y, weights=w))
    score = brier(y, p, w)
    # the reference predicts the base rate everywhere: its Brier is rate * (1 - rate)
    reference = rate * (1.0 - rate)
    skill = 1.0 - score / reference if reference > 0 else None
    return {"brier": score, "brier_reference": reference, "brier_skill": skill}


def calibration_bins(y, p, w=None, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """The reliability table: rows, weight, mean prediction and observed rate per equal-width bin.

    Bin i holds probabilities in [i/n, (i+1)/n); 1.0 falls in the last bin. Empty bins are kept
    (with None for the means) so every table has the same shape.
    """
    y, p, w = as_arrays(y, p, w)
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    weight = np.bincount(idx, weights=w, minlength=n_bins)
    wp = np.bincount(idx, weights=w * p, minlength=n_bins)
    wy = np.bincount(idx, weights=w * y, minlength=n_bins)
    rows = []
    for i in range(n_bins):
        has = weight[i] > 0
        rows.append({
            "bin": i, "lower": i / n_bins, "upper": (i + 1) / n_bins,
            "count": int(count[i]), "weight": float(weight[i]),
            "mean_predicted": float(wp[i] / weight[i]) if has else None,
            "observed_rate": float(wy[i] / weight[i]) if has else None,
        })
    return rows


def ece_from_bins(bins: list[dict[str, Any]]) -> float:
    """Expected calibration error of a reliability table: weight-averaged |predicted − observed|."""
    total = sum(b["weight"] for b in bins)
    if total <= 0:
        raise ValueError("the bins hold no weight")
    return float(sum(b["weight"] * abs(b["mean_predicted"] - b["observed_rate"])
                     for b in bins if b["weight"] > 0) / total)


def ece(y, p, w=None, n_bins: int = N_BINS) -> float:
    """Weighted expected calibration error over `n_bins` equal-width bins."""
    return ece_from_bins(calibration_bins(y, p, w, n_bins))


# The noise floor of ECE: how many perfectly calibrated label draws, which quantile of their ECE.
NOISE_DRAWS = 400
NOISE_QUANTILE = 0.95


def ece_noise(p, w=None, groups=None, n_bins: int = N_BINS, draws: int = NOISE_DRAWS,
              quantile: float = NOISE_QUANTILE, seed: int = 0) -> dict[str, Any]:
    """The ECE a perfectly calibrated model would show on these rows, from sampling alone.

    Labels are drawn as if `p` were the true probabilities, `draws` times with a fixed seed,
    and scored with the same bins and weights: the mean and the `quantile` of those ECEs. Rows
    of one group (a session's snapshots, which share a label) share one uniform draw u, each
    labelled 1 when u < p, so a session counts once as evidence however many rows it has.
    """
    _, p, w = as_arrays(np.zeros(len(np.asarray(p))), p, w)
    if len(p) == 0 or w.sum() <= 0:
        raise ValueError("no rows to measure the noise of ECE on")
    if groups is None:
        codes, n_groups = np.arange(len(p)), len(p)
    else:
        codes, uniques = pd.factorize(pd.Series(np.asarray(groups)).astype(str))
        n_groups = len(uniques)
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    order = np.argsort(idx, kind="stable")
    bounds = np.searchsorted(idx[order], np.arange(n_bins + 1))
    wp = np.bincount(idx, weights=w * p, minlength=n_bins)
    rng = np.random.default_rng(seed)
    eces = []
    for start in range(0, draws, 50):
        u = rng.random((min(50, draws - start), n_groups))
        yw = (u[:, codes[order]] < p[order]) * w[order]
        csum = np.concatenate([np.zeros((len(u), 1)), np.cumsum(yw, axis=1)], axis=1)
        wy = csum[:, bounds[1:]] - csum[:, bounds[:-1]]
        eces.append(np.abs(wp - wy).sum(axis=1) / w.sum())
    values = np.concatenate(eces)
    return {"mean": float(values.mean()), "quantile": float(np.quantile(values, quantile)),
            "level": quantile, "draws": int(draws), "groups": int(n_groups), "rows": int(len(p))}


def top_fraction(y, p, w=None, fraction: float = 0.1) -> dict[str, Any]:
    """Weighted precision and recall among the top `fraction` of rows by score.

    Rows tied with the cut-off score cannot be told apart by the model, so they are taken in
    proportion (the expectation over random tie-breaking), never in whatever order they came.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    y, p, w = as_arrays(y, p, w)
    k = max(1, math.ceil(fraction * len(p)))
    cutoff = np.sort(p)[::-1][k - 1]
    above, tied = p > cutoff, p == cutoff
    share = (k - above.sum()) / tied.sum()
    hit_w = w[above].sum() + share * w[tied].sum()
    hit_pos = (w * y)[above].sum() + share * (w * y)[tied].sum()
    positives = (w * y).sum()
    return {
        "fraction": fraction, "rows": int(k), "score_cutoff": float(cutoff),
        "precision": float(hit_pos / hit_w) if hit_w > 0 else None,
        "recall": float(hit_pos / positives) if positives > 0 else None,
    }


def lift_table(y, p, w=None, n_buckets: int = N_LIFT_BUCKETS) -> list[dict[str, Any]]:
    """Observed rate and lift over the base rate by score decile, best decile first.

    Deciles are by row count on descending score. Tied scores share a decile (their average
    rank decides it), so a coarse score shows as fewer, larger deciles rather than arbitrary splits.
    """
    y, p, w = as_arrays(y, p, w)
    rank = pd.Series(-p).rank(method="average").to_numpy()  # 1 = highest score
    bucket = np.clip(np.ceil(rank / len(p) * n_buckets).astype(np.int64), 1, n_buckets)
    rate = float(np.average(y, weights=w))
    positives = float((w * y).sum())
    rows, captured = [], 0.0
    for b in range(1, n_buckets + 1):
        m = bucket == b
        if not m.any():
            continue
        bw = float(w[m].sum())
        bpos = float((w * y)[m].sum())
        captured += bpos
        observed = bpos / bw if bw > 0 else None
        rows.append({
            "decile": b, "rows": int(m.sum()), "weight": bw,
            "min_score": float(p[m].min()), "max_score": float(p[m].max()),
            "mean_predicted": float(np.average(p[m], weights=w[m])) if bw > 0 else None,
            "observed_rate": observed,
            "lift": observed / rate if observed is not None and rate > 0 else None,
            "cumulative_recall": captured / positives if positives > 0 else None,
        })
    return rows


def _segment_row(column: str, value: str, y: np.ndarray, p: np.ndarray, w: np.ndarray,
                 min_rows: int, min_positives: int) -> dict[str, Any]:
    n, pos = len(y), int((y == 1).sum())
    return {
        "column": column, "value": value, "rows": n, "positives": pos,
        "weight": float(w.sum()),
        "base_rate": float(np.average(y, weights=w)),
        "mean_predicted": float(np.average(p, weights=w)),
        "ece": ece(y, p, w),
        "pr_auc": pr_auc(y, p, w),
        "enough_data": bool(n >= min_rows and pos >= min_positives),
    }


def segment_metrics(y, p, w=None, segments: pd.DataFrame | None = None,
                    min_rows: int = MIN_SEGMENT_ROWS,
                    min_positives: int = MIN_SEGMENT_POSITIVES) -> list[dict[str, Any]]:
    """Calibration and ranking per value of each segment column, one row per (column, value).

    `segments` is aligned row by row with `y`; nulls form their own segment. `enough_data` marks
    the segments with at least `min_rows` rows and `min_positives` positive rows: only those are
    held to the per-segment ECE bound. Rows with zero weight are counted but carry no weight.
    """
    y, p, w = as_arrays(y, p, w)
    if segments is None or segments.shape[1] == 0:
        return []
    if len(segments) != len(y):
        raise ValueError(f"segments have {len(segments)} rows, predictions {len(y)}")
    rows = []
    for column in segments.columns:
        values = segments[column].astype(object).where(segments[column].notna(), MISSING_SEGMENT)
        values = values.astype(str).to_numpy()
        for value in sorted(set(values)):
            m = values == value
            if w[m].sum() <= 0:
                continue
            rows.append(_segment_row(str(column), value, y[m], p[m], w[m], min_rows, min_positives))
    return rows


def evaluate(y, p, w=None, segments: pd.DataFrame | None = None,
             n_bins: int = N_BINS, fractions: tuple[float, ...] = TOP_FRACTIONS) -> dict[str, Any]:
    """Every metric of one predictor, as a JSON-friendly dict.

    Top-level scalars (pr_auc, roc_auc, log_loss, brier, brier_skill, ece, precision_at_10pct,
    recall_at_10pct, …) plus the tables `calibration_bins`, `top_fractions`, `lift` and
    `segments` (empty without segment columns).
    """
    y, p, w = as_arrays(y, p, w)
    bins = calibration_bins(y, p, w, n_bins)
    tops = [top_fraction(y, p, w, f) for f in fractions]
    out: dict[str, Any] = {
        "rows": int(len(y)),
        "positives": int((y == 1).sum()),
        "weight": float(w.sum()),
        "base_rate": float(np.average(y, weights=w)),
        "mean_predicted": float(np.average(p, weights=w)),
        "pr_auc": pr_auc(y, p, w),
        "roc_auc": roc_auc(y, p, w),
        "log_loss": weighted_log_loss(y, p, w),
        **brier_skill(y, p, w),
        "ece": ece_from_bins(bins),
    }
    for t in tops:
        pct = f"{round(t['fraction'] * 100):g}pct"
        out[f"precision_at_{pct}"] = t["precision"]
        out[f"recall_at_{pct}"] = t["recall"]
    out["calibration_bins"] = bins
    out["top_fractions"] = tops
    out["lift"] = lift_table(y, p, w)
    out["segments"] = segment_metrics(y, p, w, segments)
    return out


def classification_metrics(y, p, w=None) -> dict[str, Any]:
    """The headline numbers of probabilities p: what training records in the model manifest."""
    y, p, w = as_arrays(y, p, w)
    return {"pr_auc": pr_auc(y, p, w), "roc_auc": roc_auc(y, p, w),
            "log_loss": weighted_log_loss(y, p, w), "brier": brier(y, p, w), "ece": ece(y, p, w),
            "base_rate": base_rate(y, w), "mean_prediction": float(np.sum(w * p) / np.sum(w)),
            "rows": int(len(y))}
