"""Anomalies in session behaviour and traffic: bot- or fraud-like sessions, sudden drops.

Today's sessions are compared with the days before (the baseline), overall and per segment
(device, country, traffic source), and by an isolation forest over session behaviour vectors
(`outliers`: fraud-like sessions no rule names). Each test is a proper one-sided test from scipy
(Poisson for traffic counts, binomial for the bot share, Fisher's exact test of today's
purchases against the baseline's for conversion, Welch's t for engagement), and a finding needs
both a small p-value and a material change, so a big day does not flag noise and a tiny segment
does not flag chance. Minute by minute, the stream's aggregates are judged by `live_anomalies`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from intent_assets.monitoring.outliers import isolation_finding

SEGMENTS: tuple[str, ...] = ("device", "country", "traffic_source")
FINDING_COLUMNS = ["kind", "segment", "value", "observed", "expected", "ratio", "p_value", "severity",
                   "detail"]


@dataclass(frozen=True)
class AnomalyRules:
    """Thresholds of the detector, stated once."""

    p_value: float = 1e-3
    drop_ratio: float = 0.7  # today below 70 % of the baseline is a drop
    spike_ratio: float = 1.5  # bot-like share or traffic above 150 % of the baseline is a spike
    min_sessions: int = 100  # segments smaller than this today are not judged
    # Fraud-like: checkouts or purchases in bursts no human produces.
    burst_purchases: int = 3
    burst_seconds: float = 120.0
    max_events_per_second: float = 2.0


def fraud_like(sessions: pd.DataFrame, rules: AnomalyRules = AnomalyRules()) -> pd.Series:
    """Sessions that look automated or fraudulent: flagged bots, purchase bursts, inhuman speed."""
    duration = sessions["duration_s"].clip(lower=1.0)
    burst = (sessions["n_purchases"] >= rules.burst_purchases) & (sessions["duration_s"] <= rules.burst_seconds)
    fast = (sessions["n_events"] / duration > rules.max_events_per_second) & (sessions["n_events"] >= 10)
    return sessions["is_bot"].astype(bool) | burst | fast


def _finding(kind, segment, value, observed, expected, p, severity, detail) -> dict:
    ratio = observed / expected if expected else np.inf
    return dict(kind=kind, segment=segment, value=str(value), observed=float(observed),
                expected=float(expected), ratio=float(ratio), p_value=float(p), severity=severity,
                detail=detail)


def _groups(frame: pd.DataFrame, segments: Sequence[str]):
    yield "all", "all", frame
    for segment in segments:
        if segment in frame.columns:
            for value, part in frame.groupby(segment, dropna=False):
                yield segment, value, part


def detect_anomalies(today: pd.DataFrame, history: pd.DataFrame, segments: Sequence[str] = SEGMENTS,
                     rules: AnomalyRules = AnomalyRules()) -> pd.DataFrame:
    """Findings for one day of sessions against the baseline days (`history` has a `date` column)."""
    findings: list[dict] = []
    n_days = max(history["date"].nunique(), 1) if not history.empty else 0
    today = today.assign(_fraud=fraud_like(today, rules))
    if not history.empty:
        history = history.assign(_fraud=fraud_like(history, rules))

    # Bot / fraud-like share of all sessions: flagged against the baseline share.
    n, k = len(today), int(today["_fraud"].sum())
    if n and n_days:
        base = max(float(history["_fraud"].mean()), 1e-4)
        p = sps.binomtest(k, n, base, alternative="greater").pvalue
        if p < rules.p_value and k / n >= rules.spike_ratio * base:
            top = today[today["_fraud"]]["user_id"].value_counts().head(5)
            findings.append(_finding("bot_like_sessions", "all", "all", k / n, base, p, "alert",
                                     "top users: " + ", ".join(f"{u} ({c})" for u, c in top.items())))
    if not n_days:
        return pd.DataFrame(findings, columns=FINDING_COLUMNS)

    human_today = today[~today["_fraud"]]
    human_history = history[~history["_fraud"]]
    for segment, value, part in _groups(today, segments):
        base_part = history if segment == "all" else history[history[segment] == value]
        expected = len(base_part) / n_days
        if expected >= rules.min_sessions:
            observed = len(part)
            p_drop = sps.poisson.cdf(observed, expected)
            if p_drop < rules.p_value and observed < rules.drop_ratio * expected:
                findings.append(_finding("traffic_drop", segment, value, observed, expected, p_drop,
                                         "alert", "sessions per day vs the baseline's mean"))
            p_spike = sps.poisson.sf(observed - 1, expected)
            if p_spike < rules.p_value and observed > rules.spike_ratio * expected:
                findings.append(_finding("traffic_spike", segment, value, observed, expected, p_spike,
                                         "warn", "sessions per day vs the baseline's mean"))

    for segment, value, part in _groups(human_today, segments):
        base_part = human_history if segment == "all" else human_history[human_history[segment] == value]
        if len(part) < rules.min_sessions or len(base_part) < rules.min_sessions:
            continue
        views_now, views_base = part["n_views"].to_numpy(float), base_part["n_views"].to_numpy(float)
        if views_base.mean() > 0:
            t = sps.ttest_ind(views_now, views_base, equal_var=False, alternative="less")
            if t.pvalue < rules.p_value and views_now.mean() < rules.drop_ratio * views_base.mean():
                findings.append(_finding("engagement_drop", segment, value, views_now.mean(),
                                         views_base.mean(), t.pvalue, "warn", "product views per session"))
        rate_base = float(base_part["label"].mean())
        if rate_base > 0:
            # two samples: the baseline's rate is itself estimated from a few days, so today's
            # rate is tested against the baseline's counts, not against its rate as if exact
            k, kb = int(part["label"].sum()), int(base_part["label"].sum())
            p = sps.fisher_exact([[k, len(part) - k], [kb, len(base_part) - kb]],
                                 alternative="less").pvalue
            if p < rules.p_value and k / len(part) < rules.drop_ratio * rate_base:
                findings.append(_finding("conversion_drop", segment, value, k / len(part), rate_base, p,
                                         "alert", "purchase rate of human sessions"))
    isolated = isolation_finding(today, history, rules)
    if isolated:
        findings.append(isolated)
    return pd.DataFrame(findings, columns=FINDING_COLUMNS)
