"""Three policies A/B-tested on the uplift simulator: the shop's rules (control), propensity bands
and the uplift policy, beside a no-offer holdout that measures what each arm adds.

Every arm's sessions come from the same simulated population (assigned by the experiment hash),
each arm's policy picks an action per session, and outcomes are drawn from the true per-action
probabilities. Incremental figures are an arm's mean per session minus the holdout's; intervals
are percentile bootstraps over sessions (resampled in buckets, so they stay cheap at 10^5 rows).
The propensity arm is given the oracle propensity, the best a purchase model can do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from intent_assets.uplift.simulator import draw_outcomes, simulate_sessions
from serving.experiments import ExperimentDesign, assign_many
from serving.policy import RULES_ACTIONS, PolicyParams, incentive_value, upsell_value
from serving.uplift import UpliftModel, choose, incremental_margins

ARMS = ("control", "propensity", "uplift", "holdout")
POLICY_ARMS = ARMS[:3]
TO_OFFER = {"leave_alone": "none", "incentivize": "discount", "upsell": "upsell"}
METRICS = ("converted", "revenue", "margin", "incentive_spend")
# Pre-treatment signals the readout adjusts outcomes on (regression adjustment, as CUPED).
COVARIATES = ("propensity", "session_cart_value")
ADJUSTED = ("converted", "revenue", "margin")


def regression_adjusted(frame: pd.DataFrame) -> pd.DataFrame:
    """Outcomes minus their pooled linear prediction from pre-treatment covariates (centred).

    Assignment is random, so the adjustment removes variance the arms share without biasing any
    arm's mean difference."""
    x = frame[list(COVARIATES)].to_numpy(float)
    x = np.column_stack([x, x[:, 0] * x[:, 1]])
    x = x - x.mean(axis=0)
    out = frame.copy()
    for metric in ADJUSTED:
        y = frame[metric].to_numpy(float)
        beta, *_ = np.linalg.lstsq(x, y - y.mean(), rcond=None)
        out[metric] = y - x @ beta
    return out


def propensity_actions(p: np.ndarray, params: PolicyParams) -> np.ndarray:
    """`serving.policy.decide` over a column of probabilities (its bands by expected value)."""
    values = np.column_stack([np.zeros_like(p), incentive_value(p, params), upsell_value(p, params)])
    best = np.argmax(values, axis=1)
    return np.array(["none", "discount", "upsell"], dtype=object)[best]


def rules_actions(sessions: pd.DataFrame, params: PolicyParams) -> np.ndarray:
    bands = params.rules.bands(sessions)
    return np.array([TO_OFFER[RULES_ACTIONS[b]] for b in bands], dtype=object)


def uplift_actions(sessions: pd.DataFrame, model: UpliftModel, params: PolicyParams) -> np.ndarray:
    """The served uplift policy's actions (the same threshold the API applies)."""
    margins = incremental_margins(model.predict(model.matrix(sessions)), params)
    return choose(margins, model.threshold(params))


def simulate_policies(model: UpliftModel, n: int, seed: int, params: PolicyParams = PolicyParams(),
                      weights=(0.25, 0.25, 0.25, 0.25), name: str = "offer_policies_v1"
                      ) -> pd.DataFrame:
    """One simulated experiment: per session its arm, action and outcome."""
    sessions = simulate_sessions(n, seed, params)
    design = ExperimentDesign(name, f"{name}-salt", ARMS, tuple(weights))
    arms = np.array(assign_many(sessions["session_id"], design), dtype=object)
    actions = np.full(n, "none", dtype=object)
    policies = {"control": lambda s: rules_actions(s, params),
                "propensity": lambda s: propensity_actions(s["propensity"].to_numpy(), params),
                "uplift": lambda s: uplift_actions(s, model, params)}
    for arm, policy in policies.items():
        actions[arms == arm] = policy(sessions[arms == arm])
    outcomes = draw_outcomes(sessions, actions, seed + 1, params)
    return pd.concat([sessions[["session_id", "trait", *COVARIATES]], outcomes],
                     axis=1).assign(arm=arms)


@dataclass(frozen=True)
class ArmReadout:
    table: pd.DataFrame          # one row per arm: per-session means and incremental ones with CIs
    ratio_vs_propensity: tuple[float, float, float]   # uplift's margin per spend / propensity's
    # uplift's margin per spend minus `target` times the propensity arm's: > 0 meets the target
    excess_over_target: tuple[float, float, float]
    target: float

    @property
    def target_met(self) -> bool:
        return self.excess_over_target[1] > 0


def _bucket_sums(frame: pd.DataFrame, buckets: int, seed: int) -> dict[str, np.ndarray]:
    """Per arm, sums of each metric (and counts) over `buckets` random buckets of sessions."""
    rng = np.random.default_rng(seed)
    out = {}
    for arm in ARMS:
        g = frame[frame["arm"] == arm]
        b = rng.integers(0, buckets, len(g))
        sums = np.column_stack([np.bincount(b, weights=g[m].to_numpy(float), minlength=buckets)
                                for m in METRICS] + [np.bincount(b, minlength=buckets)])
        out[arm] = sums
    return out


def _stats(sums: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per arm: per-session means, incremental means vs holdout, margin per incentive spent."""
    means = {arm: s[:, :-1].sum(axis=0) / s[:, -1].sum() for arm, s in sums.items()}
    out = {}
    for arm in POLICY_ARMS:
        inc = means[arm] - means["holdout"]
        spend = means[arm][METRICS.index("incentive_spend")]
        out[arm] = {**{f"{m}": means[arm][i] for i, m in enumerate(METRICS)},
                    **{f"incremental_{m}": inc[i] for i, m in enumerate(METRICS[:3])},
                    "margin_per_spend": inc[2] / spend if spend > 0 else np.nan}
    return out


def readout(frame: pd.DataFrame, reps: int = 500, buckets: int = 500, seed: int = 0,
            alpha: float = 0.05, target: float = 1.2) -> ArmReadout:
    """Per arm: conversions, revenue, margin and incentive spend per 1,000 sessions, incremental
    against the holdout (outcomes regression-adjusted on pre-treatment covariates), with
    percentile bootstrap intervals; and the uplift arm's incremental margin per incentive spent
    over the propensity arm's."""
    sums = _bucket_sums(regression_adjusted(frame), buckets, seed)
    point = _stats(sums)
    rng = np.random.default_rng(seed + 1)
    draws = []
    for _ in range(reps):
        resampled = {arm: s[rng.integers(0, buckets, buckets)] for arm, s in sums.items()}
        draws.append(_stats(resampled))
    rows = []
    q = [alpha / 2, 1 - alpha / 2]
    for arm in POLICY_ARMS:
        row = {"arm": arm, "sessions": int(sums[arm][:, -1].sum())}
        for key, value in point[arm].items():
            lo, hi = np.nanquantile([d[arm][key] for d in draws], q)
            row[key], row[f"{key}_lower"], row[f"{key}_upper"] = value, lo, hi
        rows.append(row)
    def ratio(d):
        return d["uplift"]["margin_per_spend"] / d["propensity"]["margin_per_spend"]

    def excess(d):
        return d["uplift"]["margin_per_spend"] - target * d["propensity"]["margin_per_spend"]

    intervals = []
    for statistic in (ratio, excess):
        lo, hi = np.nanquantile([statistic(d) for d in draws], q)
        intervals.append((float(statistic(point)), float(lo), float(hi)))
    holdout = {"arm": "holdout", "sessions": int(sums["holdout"][:, -1].sum())}
    return ArmReadout(pd.DataFrame(rows + [holdout]), *intervals, target)


def readout_markdown(r: ArmReadout, name: str) -> str:
    per1k = ("incremental_converted", "incremental_revenue", "incremental_margin", "incentive_spend")
    lines = [f"## Three-arm readout: {name}", "",
             "Per 1,000 sessions, against the no-offer holdout; 95 % bootstrap intervals.", "",
             "| arm | sessions | incremental conversions | incremental revenue | incremental margin "
             "| incentive spend | incremental margin per incentive spent |",
             "|---|---|---|---|---|---|---|"]
    for _, row in r.table.iterrows():
        if row["arm"] == "holdout":
            lines.append(f"| holdout (no offer) | {row['sessions']:,} | — | — | — | — | — |")
            continue
        cells = [f"{1000 * row[k]:,.1f} [{1000 * row[k + '_lower']:,.1f}, "
                 f"{1000 * row[k + '_upper']:,.1f}]" for k in per1k]
        cells.append(f"{row['margin_per_spend']:.2f} [{row['margin_per_spend_lower']:.2f}, "
                     f"{row['margin_per_spend_upper']:.2f}]")
        lines.append(f"| {row['arm']} | {row['sessions']:,} | " + " | ".join(cells) + " |")
    ratio, lo, hi = r.ratio_vs_propensity
    excess, elo, ehi = r.excess_over_target
    verdict = "met" if r.target_met else "not met"
    lines += ["", f"Uplift policy's incremental margin per incentive spent over the propensity "
                  f"bands': **{ratio:.2f}× [{lo:.2f}, {hi:.2f}]**. Target ≥ {r.target:.1f}×: "
                  f"uplift's margin per spend minus {r.target:.1f} × the bands' = "
                  f"{excess:+.2f} [{elo:+.2f}, {ehi:+.2f}], **{verdict}** (the interval is above 0)."]
    return "\n".join(lines)


def plot_readout(r: ArmReadout, path: str | Path) -> Path:
    """Incremental margin and incentive spend per 1,000 sessions per arm, with intervals."""
    t = r.table[r.table["arm"] != "holdout"]
    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 3)
    for ax, key, title in zip(axes, ("incremental_margin", "incentive_spend", "margin_per_spend"),
                              ("incremental margin / 1k sessions", "incentive spend / 1k sessions",
                               "incremental margin per spend")):
        scale = 1.0 if key == "margin_per_spend" else 1000.0
        est = t[key].to_numpy() * scale
        err = [est - t[f"{key}_lower"].to_numpy() * scale, t[f"{key}_upper"].to_numpy() * scale - est]
        ax.bar(t["arm"], est, yerr=err, capsize=5, color=["tab:grey", "tab:blue", "tab:green"])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(path))
    return path
