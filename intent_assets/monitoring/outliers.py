"""Fraud-like sessions no rule names: an isolation forest over session behaviour vectors.

Fitted on the baseline days' sessions (scikit-learn's IsolationForest, fixed seed); a session is
isolated when its score is below the baseline's `quantile` (so about that share of baseline
sessions is isolated by construction). A day whose isolated share is well above it (a one-sided
binomial test and a material ratio, the daily detector's rules) is a finding, with the most
isolated sessions and the behaviour that sets them apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

COUNTS = ("n_events", "n_views", "n_carts", "n_removes", "n_searches", "n_page_views",
          "n_checkouts", "n_purchases")
MAX_FIT_ROWS = 50_000


def behaviour(sessions: pd.DataFrame) -> pd.DataFrame:
    """One row per session: log counts, log duration, events per minute, revenue per purchase."""
    out = pd.DataFrame(index=sessions.index)
    for name in COUNTS:
        if name in sessions:
            out[name] = np.log1p(sessions[name].fillna(0).astype(float))
    duration = sessions["duration_s"].fillna(0).astype(float).clip(lower=0)
    out["log_duration_s"] = np.log1p(duration)
    out["events_per_minute"] = np.log1p(sessions["n_events"] / np.maximum(duration / 60, 1 / 60))
    revenue = sessions["revenue"].fillna(0).astype(float) if "revenue" in sessions else 0.0
    out["revenue_per_purchase"] = np.log1p(revenue / np.maximum(sessions["n_purchases"], 1))
    return out


def isolated_sessions(today: pd.DataFrame, history: pd.DataFrame, quantile: float = 0.001,
                      seed: int = 0) -> tuple[pd.Series, float]:
    """Each of today's sessions' isolation score, and the baseline's `quantile` of scores (the
    threshold: lower is more isolated)."""
    from sklearn.ensemble import IsolationForest

    base = behaviour(history)
    if len(base) > MAX_FIT_ROWS:
        base = base.sample(MAX_FIT_ROWS, random_state=seed)
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(base.to_numpy())
    threshold = float(np.quantile(forest.score_samples(base.to_numpy()), quantile))
    scores = forest.score_samples(behaviour(today).to_numpy())
    return pd.Series(scores, index=today.index), threshold


def isolation_finding(today: pd.DataFrame, history: pd.DataFrame, rules, quantile: float = 0.001
                      ) -> dict | None:
    """A finding when today's share of isolated sessions is well above the baseline's, else None."""
    if len(today) < rules.min_sessions or len(history) < 10 * rules.min_sessions:
        return None
    scores, threshold = isolated_sessions(today, history, quantile)
    isolated = scores < threshold
    k, n = int(isolated.sum()), len(today)
    p = sps.binomtest(k, n, quantile, alternative="greater").pvalue
    if not (p < rules.p_value and k / n >= rules.spike_ratio * quantile):
        return None
    worst = today.loc[scores[isolated].nsmallest(5).index]
    z = (behaviour(worst) - behaviour(history).mean()) / behaviour(history).std().replace(0, 1)
    detail = "; ".join(f"{sid}: " + ", ".join(z.loc[i].abs().nlargest(2).index)
                       for i, sid in zip(worst.index, worst["session_id"]))
    return dict(kind="isolated_sessions", segment="all", value="all", observed=k / n,
                expected=quantile, ratio=k / n / quantile, p_value=float(p), severity="alert",
                detail="most isolated (what stands out): " + detail)
