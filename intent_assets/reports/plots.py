"""The report's pictures: reliability curve and precision-recall curve, written as PNG files.

Figures are drawn on matplotlib's Agg canvas directly, never through pyplot, so no global
backend or figure registry is touched (safe inside Dagster's worker processes and threads).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve

from intent_assets.reports.metrics import N_BINS, as_arrays, base_rate, calibration_bins, pr_auc

DPI = 110


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(path))
    return path


def plot_reliability(named_predictions: dict[str, np.ndarray], y, w, path: str | Path,
                     n_bins: int = N_BINS, title: str = "Reliability") -> Path:
    """Observed rate against mean prediction per bin for each predictor, over the diagonal.

    The lower panel shows how many rows fall in each bin (log scale), so a point backed by a
    handful of rows is not read as a calibration failure.
    """
    if not named_predictions:
        raise ValueError("nothing to plot")
    fig = Figure(figsize=(7, 7.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    width = 1.0 / n_bins
    n = len(named_predictions)
    for i, (name, p) in enumerate(named_predictions.items()):
        bins = [b for b in calibration_bins(y, p, w, n_bins) if b["weight"] > 0]
        xs = [b["mean_predicted"] for b in bins]
        ys = [b["observed_rate"] for b in bins]
        line, = top.plot(xs, ys, marker="o", markersize=4, linewidth=1.5, label=name)
        lefts = np.array([b["lower"] for b in bins]) + width * i / n
        bottom.bar(lefts, [b["count"] for b in bins], width=width / n, align="edge",
                   color=line.get_color(), alpha=0.8)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed purchase rate")
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.set_yscale("log")
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("rows per bin")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_pr_curves(named_predictions: dict[str, np.ndarray], y, w, path: str | Path,
                   title: str = "Precision-recall") -> Path:
    """Weighted precision-recall curves of several predictors, average precision in the legend."""
    if not named_predictions:
        raise ValueError("nothing to plot")
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    rate = base_rate(y, w)
    for name, p in named_predictions.items():
        yv, pv, wv = as_arrays(y, p, w)
        ap = pr_auc(yv, pv, wv)
        if ap is None:
            continue
        precision, recall, _ = precision_recall_curve(yv, pv, sample_weight=wv)
        ax.step(recall, precision, where="post", linewidth=1.5, label=f"{name} (AP {ap:.3f})")
    ax.axhline(rate, linestyle="--", color="grey", linewidth=1, label=f"base rate {rate:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_families(rows: list[dict], path: str | Path, budget_ms: float | None = None,
                  title: str = "Model families on the test split") -> Path:
    """Test PR-AUC of every predictor (left) and single-row scoring time of every family (right).

    `rows`: dicts with `predictor`, `pr_auc` and, for served families, `score_p50_ms`
    (`eligible` False draws the bar hatched)."""
    if not rows:
        raise ValueError("nothing to plot")
    fig = Figure(figsize=(10, 0.45 * len(rows) + 1.8))
    left, right = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    names = [r["predictor"] for r in rows][::-1]
    ordered = rows[::-1]
    colors = ["tab:green" if r.get("champion") else "tab:blue" if r.get("score_p50_ms") is not None
              else "tab:grey" for r in ordered]
    hatches = ["//" if r.get("eligible") is False else "" for r in ordered]
    bars = left.barh(names, [r.get("pr_auc") or 0.0 for r in ordered], color=colors)
    for bar, hatch in zip(bars, hatches):
        bar.set_hatch(hatch)
    for bar, r in zip(bars, ordered):
        if r.get("pr_auc") is not None:
            left.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r['pr_auc']:.3f}",
                      va="center", fontsize=8)
    left.set_xlim(0, 1.1)
    left.set_xlabel("PR-AUC (average precision)")
    left.set_title(title)
    left.grid(alpha=0.3, axis="x")
    # log scale: families differ by orders of magnitude; baselines have no bar
    latency = [r.get("score_p50_ms") or np.nan for r in ordered]
    lbars = right.barh(names, latency, color=colors)
    right.set_xscale("log")
    for bar, hatch in zip(lbars, hatches):
        bar.set_hatch(hatch)
    if budget_ms is not None:
        right.axvline(budget_ms, linestyle="--", color="tab:red", linewidth=1,
                      label=f"budget {budget_ms:g} ms")
        right.legend(loc="lower right", fontsize=8)
    right.set_xlabel("one row with 3 reasons, p50 (ms)")
    right.set_title("scoring time (green: champion; hatched: not eligible)", fontsize=9)
    right.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _save(fig, path)
