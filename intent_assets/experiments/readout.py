"""The A/B readout: every metric, test and decision for one experiment, as markdown and a plot."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats as sps

from serving.experiments import ExperimentDesign
from intent_assets.experiments.stats import (
    Cuped,
    SampleRatio,
    Sequential,
    Uplift,
    cuped,
    mean_uplift,
    mean_uplift_se,
    ratio_uplift,
    sample_ratio_mismatch,
    sequential_decision,
    variant_summary,
)

# Which pre-period covariate CUPED uses for which per-user metric.
COVARIATES = {"converted": "pre_orders", "revenue": "pre_revenue"}
PRIMARY_METRICS = {"conversion": "converted", "revenue_per_visitor": "revenue"}


@dataclass(frozen=True)
class Comparison:
    """One treatment against the control."""

    variant: str
    conversion: Uplift
    conversion_cuped: Uplift
    conversion_cuped_fit: Cuped
    aov: Uplift
    revenue_per_visitor: Uplift
    revenue_per_visitor_cuped: Uplift
    revenue_cuped_fit: Cuped
    guardrail_breaches: tuple[str, ...]
    sequential: Sequential


@dataclass(frozen=True)
class Readout:
    experiment: str
    control: str
    primary: str
    summary: pd.DataFrame
    srm: SampleRatio
    comparisons: tuple[Comparison, ...]

    @property
    def decision(self) -> str:
        """Ship if any treatment ships; no ship if every one is stopped; else keep running."""
        decisions = [c.sequential.decision for c in self.comparisons]
        if "ship" in decisions:
            return "ship"
        return "no ship" if all(d == "no ship" for d in decisions) else "keep running"

    @property
    def best_variant(self) -> str | None:
        shipped = [c for c in self.comparisons if c.sequential.decision == "ship"]
        return max(shipped, key=lambda c: c.sequential.estimate).variant if shipped else None

    def to_markdown(self) -> str:
        return readout_markdown(self)


def _guardrails(t: pd.DataFrame, c: pd.DataFrame, alpha: float, max_latency_increase: float,
                max_error_increase: float) -> tuple[str, ...]:
    """Breaches: latency or error rate significantly worse than the tolerated margin."""
    breaches = []
    if t["latency_ms"].notna().any() and c["latency_ms"].notna().any():
        latency = mean_uplift(t["latency_ms"].dropna(), c["latency_ms"].dropna(), alpha)
        if latency.lower > max_latency_increase:
            breaches.append(f"latency +{latency.estimate:.1%}")
    et, ec = t["is_error"].astype(float), c["is_error"].astype(float)
    diff = et.mean() - ec.mean()
    se = math.sqrt(et.var(ddof=1) / len(et) + ec.var(ddof=1) / len(ec))
    if diff - float(sps.norm.ppf(1 - alpha / 2)) * se > max_error_increase:
        breaches.append(f"error rate +{diff:.2%} points")
    return tuple(breaches)


def compare(users: pd.DataFrame, variant: str, control: str, planned_users: int, srm: SampleRatio,
            primary: str = "conversion", alpha: float = 0.05, max_latency_increase: float = 0.10,
            max_error_increase: float = 0.002) -> Comparison:
    """Uplifts (raw, CUPED, delta-method AOV), guardrails and the sequential decision for one arm."""
    pair = users[users["variant"].isin([variant, control])]
    treated = (pair["variant"] == variant).to_numpy()
    fits = {m: cuped(pair[m].to_numpy(float), pair[x].to_numpy(float)) for m, x in COVARIATES.items()}
    t, c = pair[treated], pair[~treated]

    def both(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return values[treated], values[~treated]

    primary_values = fits[PRIMARY_METRICS[primary]].adjusted
    estimate, se = mean_uplift_se(*both(primary_values))
    breaches = _guardrails(t, c, alpha, max_latency_increase, max_error_increase)
    return Comparison(
        variant=variant,
        conversion=mean_uplift(t["converted"], c["converted"], alpha),
        conversion_cuped=mean_uplift(*both(fits["converted"].adjusted), alpha),
        conversion_cuped_fit=fits["converted"],
        aov=ratio_uplift(t["revenue"], t["orders"], c["revenue"], c["orders"], alpha),
        revenue_per_visitor=mean_uplift(t["revenue"], c["revenue"], alpha),
        revenue_per_visitor_cuped=mean_uplift(*both(fits["revenue"].adjusted), alpha),
        revenue_cuped_fit=fits["revenue"],
        guardrail_breaches=breaches,
        sequential=sequential_decision(estimate, se, len(pair), planned_users, alpha, srm, breaches),
    )


def build_readout(users: pd.DataFrame, design: ExperimentDesign, planned_users: int,
                  primary: str = "conversion", alpha: float = 0.05) -> Readout:
    """The whole readout from the per-user table (`stats.user_table`)."""
    if primary not in PRIMARY_METRICS:
        raise ValueError(f"primary metric must be one of {sorted(PRIMARY_METRICS)}")
    unknown = set(users["variant"]) - set(design.variants)
    if unknown:
        raise ValueError(f"users in variants the design does not have: {sorted(unknown)}")
    counts = users["variant"].value_counts().reindex(list(design.variants), fill_value=0)
    srm = sample_ratio_mismatch(counts.to_numpy(), design.shares)
    comparisons = tuple(compare(users, v, design.control, planned_users, srm, primary, alpha)
                        for v in design.variants[1:])
    return Readout(design.name, design.control, primary, variant_summary(users, design.variants),
                   srm, comparisons)


def _pct(u: Uplift) -> str:
    return f"{u.estimate:+.2%} [{u.lower:+.2%}, {u.upper:+.2%}] (p = {u.p_value:.3g})"


def readout_markdown(r: Readout) -> str:
    """The readout as the markdown shown in the Dagster UI and the README."""
    summary = r.summary.copy()
    for col in ("conversion_rate", "error_rate"):
        summary[col] = summary[col].map("{:.2%}".format)
    for col in ("aov", "revenue_per_visitor", "revenue", "latency_ms_mean", "latency_ms_p95"):
        summary[col] = summary[col].map("{:,.2f}".format)
    lines = [f"## A/B readout: {r.experiment}", "",
             f"**Decision: {r.decision}**" + (f" ({r.best_variant})" if r.best_variant else ""),
             f"(primary metric: {r.primary}, CUPED-adjusted, always-valid 95 % interval)", "",
             summary.reset_index(names="variant").to_markdown(index=False), "",
             f"Sample ratio: counts {list(r.srm.counts)} vs expected "
             f"{[round(e, 1) for e in r.srm.expected]}, chi2 = {r.srm.chi2:.2f}, p = {r.srm.p_value:.3g}"
             + (" — **SRM flagged** (p < 0.001)" if r.srm.flagged else " — ok"), ""]
    for c in r.comparisons:
        s = c.sequential
        lines += [f"### {c.variant} vs {r.control}", "",
                  "| metric | relative uplift, 95 % CI |", "|---|---|",
                  f"| conversion | {_pct(c.conversion)} |",
                  f"| conversion (CUPED) | {_pct(c.conversion_cuped)} |",
                  f"| AOV (delta method) | {_pct(c.aov)} |",
                  f"| revenue per visitor | {_pct(c.revenue_per_visitor)} |",
                  f"| revenue per visitor (CUPED) | {_pct(c.revenue_per_visitor_cuped)} |", "",
                  f"CUPED: theta = {c.conversion_cuped_fit.theta:.4f} on pre-period orders "
                  f"(variance −{c.conversion_cuped_fit.variance_reduction:.1%} for conversion), "
                  f"theta = {c.revenue_cuped_fit.theta:.4f} on pre-period revenue "
                  f"(variance −{c.revenue_cuped_fit.variance_reduction:.1%} for revenue).", "",
                  f"Guardrails: {', '.join(c.guardrail_breaches) or 'latency and error rate ok'}.", "",
                  f"Sequential: {s.estimate:+.2%} in always-valid [{s.lower:+.2%}, {s.upper:+.2%}] "
                  f"after {s.users:,} of {s.planned_users:,} planned users → **{s.decision}** ({s.reason}).",
                  ""]
    return "\n".join(lines)


def plot_uplifts(r: Readout, path: str | Path) -> Path:
    """Relative uplift per metric with its 95 % CI (and the always-valid one for the primary)."""
    rows = []
    for c in r.comparisons:
        rows += [(f"{c.variant}: conversion", c.conversion), (f"{c.variant}: conversion CUPED", c.conversion_cuped),
                 (f"{c.variant}: AOV", c.aov), (f"{c.variant}: RPV", c.revenue_per_visitor),
                 (f"{c.variant}: RPV CUPED", c.revenue_per_visitor_cuped)]
    fig = Figure(figsize=(7, 0.5 * len(rows) + 1.5))
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    est = np.array([u.estimate for _, u in rows])
    ax.errorbar(est, y, xerr=[est - [u.lower for _, u in rows], [u.upper for _, u in rows] - est],
                fmt="o", capsize=4, label="95 % CI")
    for i, c in enumerate(r.comparisons):
        s = c.sequential
        row = y[5 * i + (1 if r.primary == "conversion" else 4)]
        ax.plot([s.lower, s.upper], [row - 0.25, row - 0.25], color="tab:orange", linewidth=3,
                label="always-valid (primary)" if i == 0 else None)
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(y, [name for name, _ in rows])
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:+.0%}")
    ax.set_title(f"{r.experiment}: relative uplift vs {r.control} — {r.decision}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(path))
    return path
