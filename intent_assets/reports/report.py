"""The reliability report: the model against its baselines and the oracle, on one test split.

`build_report` evaluates every named predictor with the same metrics and weights; `Report`
renders the result as markdown (for the Dagster UI) and writes report.json, report.md,
reliability.png and pr_curve.png.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from intent_assets.reports.metrics import TOP_FRACTIONS, as_arrays, evaluate
from intent_assets.reports.plots import plot_pr_curves, plot_reliability

# The columns of the comparison table, in order.
COMPARISON_METRICS: tuple[str, ...] = (
    "pr_auc", "roc_auc", "log_loss", "brier", "brier_skill", "ece",
    *(f"precision_at_{round(f * 100)}pct" for f in TOP_FRACTIONS),
)
FILES = {"json": "report.json", "markdown": "report.md",
         "reliability": "reliability.png", "pr_curve": "pr_curve.png"}
FAMILIES_PNG = "families.png"
# the served families' columns beside the metrics, in order
FAMILY_COLUMNS = ("training_s", "score_p50_ms", "score_p99_ms", "artifact_kb", "eligible",
                  "failed_gates", "champion")


def family_comparison(report: "Report", candidates: list[dict], winner_version: str | None
                      ) -> list[dict]:
    """The comparison's rows with, for each served family, what serving it costs and whether
    the gates let it be published; baselines and the oracle keep their metrics only."""
    by_name = {c["family"]: c for c in candidates}
    rows = []
    for row in report.comparison:
        if row["predictor"] == report.primary:
            continue
        c = by_name.get(row["predictor"])
        extra: dict[str, Any] = {k: None for k in FAMILY_COLUMNS}
        if c is not None:
            latency = c.get("latency_ms") or {}
            failed = [n for n, passed in c.get("gates", {}).items() if not passed]
            extra = {"training_s": c.get("training_seconds"), "score_p50_ms": latency.get("p50"),
                     "score_p99_ms": latency.get("p99"),
                     "artifact_kb": round(c.get("artifact_bytes", 0) / 1024, 1),
                     "eligible": not failed, "failed_gates": ", ".join(failed) or "–",
                     "champion": c["version"] == winner_version}
        rows.append({**row, **extra})
    return rows


@dataclass
class Report:
    """Metrics of every predictor on one split, the comparison between them and its renderings."""

    primary: str
    oracle_name: str | None
    evaluations: dict[str, dict[str, Any]]
    comparison: list[dict[str, Any]]
    oracle_ratios: dict[str, float | None] | None
    segments: list[dict[str, Any]]
    # kept for the plots; not part of the serialized report
    predictions: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    y: np.ndarray | None = field(repr=False, default=None)
    w: np.ndarray | None = field(repr=False, default=None)

    @property
    def summary(self) -> dict[str, Any]:
        """The primary model's headline numbers (what an asset puts in its metadata)."""
        ev = self.evaluations[self.primary]
        out = {k: ev[k] for k in ("rows", "positives", "base_rate", *COMPARISON_METRICS)}
        out["recall_at_10pct"] = ev.get("recall_at_10pct")
        if self.oracle_ratios:
            out["pr_auc_vs_oracle"] = self.oracle_ratios.get("pr_auc")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything but the raw predictions, JSON-serializable."""
        return {"primary": self.primary, "oracle": self.oracle_name, "summary": self.summary,
                "comparison": self.comparison, "oracle_ratios": self.oracle_ratios,
                "segments": self.segments, "evaluations": self.evaluations}

    def to_markdown(self) -> str:
        """The report as markdown tables: comparison, oracle ratios, top-k, lift, calibration, segments."""
        ev = self.evaluations[self.primary]
        lines = [
            f"## Reliability report: `{self.primary}`",
            "",
            f"{ev['rows']:,} rows, {ev['positives']:,} positive rows, total weight "
            f"{ev['weight']:,.1f} (sum of sample weights), weighted base rate {ev['base_rate']:.4f}.",
            "",
            "### Comparison",
            "",
            _table(self.comparison),
            "",
        ]
        if self.oracle_ratios:
            ratios = [{"ratio": f"{self.primary} / {self.oracle_name}", **self.oracle_ratios}]
            lines += ["### Model / oracle", "",
                      "Higher-is-better metrics: 1.0 means as good as the true probabilities. "
                      "Losses (log loss, Brier): above 1.0 means worse.", "",
                      _table(ratios), ""]
        lines += ["### Precision and recall at the top of the ranking", "",
                  _table([{"top": f"{t['fraction']:.0%}", **{k: v for k, v in t.items() if k != "fraction"}}
                          for t in ev["top_fractions"]]), "",
                  "### Lift by decile", "",
                  _table(ev["lift"]), "",
                  "### Calibration bins (empty bins omitted)", "",
                  _table([b for b in ev["calibration_bins"] if b["count"] > 0]), ""]
        if self.segments:
            lines += ["### Calibration by segment", "",
                      "Only segments with `enough_data` are held to the per-segment ECE bound.", "",
                      _table(self.segments), ""]
        return "\n".join(lines)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write report.json, report.md, reliability.png and pr_curve.png; return their paths."""
        if not self.predictions:
            raise ValueError("the report holds no predictions to plot")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {k: out / v for k, v in FILES.items()}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
        paths["markdown"].write_text(self.to_markdown())
        plot_reliability(self.predictions, self.y, self.w, paths["reliability"],
                         title=f"Reliability on the test split ({len(self.y):,} rows)")
        plot_pr_curves(self.predictions, self.y, self.w, paths["pr_curve"])
        return paths


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4f}"
    return str(v)


def _table(rows: list[dict[str, Any]]) -> str:
    """A markdown table with ints as ints, floats to 4 places and undefined values as a dash."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    # cells are formatted from the dicts, not a DataFrame, which would turn int-with-None into float
    cells = pd.DataFrame([[_cell(row.get(c)) for c in columns] for row in rows], columns=columns)
    numeric = [all(isinstance(row.get(c), (int, float, np.number, type(None)))
                   and not isinstance(row.get(c), (bool, np.bool_)) for row in rows) for c in columns]
    # numbers are pre-formatted; tabulate parsing them again would turn every int into a float
    return cells.to_markdown(index=False, disable_numparse=True,
                             colalign=["right" if n else "left" for n in numeric])


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return float(num / den)


def build_report(named_predictions: dict[str, np.ndarray], y, w=None,
                 segments: pd.DataFrame | None = None, primary: str = "model",
                 oracle_name: str | None = "oracle") -> Report:
    """Evaluate every predictor on the same rows and compare them with the primary model.

    `named_predictions` maps a name (model, rules, logistic, oracle, …) to its probabilities,
    aligned with `y`, `w` and `segments`. The oracle, when named and present, is the true
    probability (simulated data only): each row of the comparison then carries its PR-AUC as a
    share of the oracle's. Segment metrics are computed for the primary model only.
    """
    if primary not in named_predictions:
        raise ValueError(f"primary predictor {primary!r} is not among {sorted(named_predictions)}")
    y, _, w = as_arrays(y, named_predictions[primary], w)
    preds = {name: as_arrays(y, p, w)[1] for name, p in named_predictions.items()}
    oracle = oracle_name if oracle_name in preds else None
    evaluations = {name: evaluate(y, p, w, segments if name == primary else None)
                   for name, p in preds.items()}
    comparison = []
    for name, ev in evaluations.items():
        row = {"predictor": name, **{m: ev[m] for m in COMPARISON_METRICS}}
        if oracle:
            row["pr_auc_vs_oracle"] = _ratio(ev["pr_auc"], evaluations[oracle]["pr_auc"])
        comparison.append(row)
    ratios = None
    if oracle:
        # not ECE: the oracle's is pure sampling noise near 0, so a ratio to it means nothing
        ratios = {m: _ratio(evaluations[primary][m], evaluations[oracle][m])
                  for m in COMPARISON_METRICS if m != "ece"}
    return Report(primary=primary, oracle_name=oracle, evaluations=evaluations,
                  comparison=comparison, oracle_ratios=ratios,
                  segments=evaluations[primary]["segments"], predictions=preds, y=y, w=w)
