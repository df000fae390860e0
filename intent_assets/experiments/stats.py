"""The statistics of an A/B readout: uplifts with intervals, SRM, CUPED and a sequential decision.

The unit of randomisation and of analysis is the user (intention to treat: every assigned user
counts, whether or not they bought). Intervals are normal approximations whose standard errors
come from the delta method, so ratio metrics (AOV = revenue / orders, both per user) and relative
differences (treatment / control - 1) are handled the same way. Quantiles and tests come from
scipy; nothing here re-implements a distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

SRM_THRESHOLD = 0.001
USER_COLUMNS = ["user_id", "variant", "assigned_time", "pre_orders", "pre_revenue", "converted", "orders", "revenue",
                "offer_shown", "offer_clicked", "offer_accepted", "latency_ms", "is_error"]


@dataclass(frozen=True)
class Uplift:
    """A relative uplift (treatment / control - 1) with its standard error and interval."""

    estimate: float
    se: float
    lower: float
    upper: float
    p_value: float

    def covers(self, value: float) -> bool:
        return self.lower <= value <= self.upper


@dataclass(frozen=True)
class Cuped:
    """CUPED's adjustment: theta = cov(y, x) / var(x), and the share of variance it removed."""

    theta: float
    variance_reduction: float
    adjusted: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class SampleRatio:
    """The chi-square test of observed arm sizes against the designed split."""

    counts: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float
    flagged: bool


@dataclass(frozen=True)
class Sequential:
    """An always-valid interval for the relative uplift, and what to do about it now."""

    estimate: float
    lower: float
    upper: float
    users: int
    planned_users: int
    decision: str  # "ship" | "no ship" | "keep running"
    reason: str


def _z(alpha: float) -> float:
    return float(sps.norm.ppf(1 - alpha / 2))


def _uplift(estimate: float, se: float, alpha: float) -> Uplift:
    if not math.isfinite(se) or se <= 0:
        return Uplift(estimate, float("nan"), float("nan"), float("nan"), float("nan"))
    z = _z(alpha)
    p = float(2 * sps.norm.sf(abs(estimate) / se))
    return Uplift(estimate, se, estimate - z * se, estimate + z * se, p)


def mean_uplift_se(treatment: np.ndarray, control: np.ndarray) -> tuple[float, float]:
    """Relative difference of two means and its delta-method standard error.

    For r = m_t / m_c - 1 with independent arms:
    Var(r) ~= Var(m_t) / m_c^2 + m_t^2 Var(m_c) / m_c^4.
    """
    t = np.asarray(treatment, dtype=float)
    c = np.asarray(control, dtype=float)
    mt, mc = t.mean(), c.mean()
    vt, vc = t.var(ddof=1) / t.size, c.var(ddof=1) / c.size
    if mc == 0:
        return float("nan"), float("nan")
    return mt / mc - 1, math.sqrt(vt / mc ** 2 + mt ** 2 * vc / mc ** 4)


def mean_uplift(treatment: np.ndarray, control: np.ndarray, alpha: float = 0.05) -> Uplift:
    """Relative uplift of a per-user mean (conversion, revenue per visitor) with its (1 - alpha) CI."""
    return _uplift(*mean_uplift_se(treatment, control), alpha)


def ratio_mean_var(numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, float]:
    """A ratio of sums over users (e.g. AOV) and the delta-method variance of that ratio.

    R = mean(Y) / mean(X);  Var(R) ~= (Var(Y) - 2 R Cov(X, Y) + R^2 Var(X)) / (n mean(X)^2)
    (Deng, Knoblich & Lu 2018, "Applying the delta method in metric analytics").
    """
    y = np.asarray(numerator, dtype=float)
    x = np.asarray(denominator, dtype=float)
    mx = x.mean()
    r = y.mean() / mx
    cov = np.cov(y, x, ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r ** 2 * cov[1, 1]) / (y.size * mx ** 2)
    # exactly 0 when every order has the same value; rounding can leave it a hair below
    return float(r), max(float(var), 0.0)


def ratio_uplift(num_t: np.ndarray, den_t: np.ndarray, num_c: np.ndarray, den_c: np.ndarray,
                 alpha: float = 0.05) -> Uplift:
    """Relative uplift of a ratio metric (AOV: revenue / orders per user) by the delta method."""
    rt, vt = ratio_mean_var(num_t, den_t)
    rc, vc = ratio_mean_var(num_c, den_c)
    se = math.sqrt(vt / rc ** 2 + rt ** 2 * vc / rc ** 4)
    return _uplift(rt / rc - 1, se, alpha)


def cuped(y: np.ndarray, x: np.ndarray) -> Cuped:
    """CUPED (Deng et al. 2013): y - theta (x - mean x) with theta = cov(y, x) / var(x), pooled.

    The covariate is measured before assignment, so its mean is the same in every arm and the
    adjusted means stay unbiased for the effect while their variance drops by corr(y, x)^2.
    """
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    var_x = x.var(ddof=1)
    if var_x == 0:
        return Cuped(0.0, 0.0, y.copy())
    theta = float(np.cov(y, x, ddof=1)[0, 1] / var_x)
    adjusted = y - theta * (x - x.mean())
    var_y = y.var(ddof=1)
    reduction = 1 - adjusted.var(ddof=1) / var_y if var_y > 0 else 0.0
    return Cuped(theta, float(reduction), adjusted)


def sample_ratio_mismatch(counts: Sequence[int], shares: Sequence[float],
                          threshold: float = SRM_THRESHOLD) -> SampleRatio:
    """Chi-square goodness of fit of arm sizes to the designed split; flagged when p < threshold."""
    observed = np.asarray(counts, dtype=float)
    shares = np.asarray(shares, dtype=float)
    expected = observed.sum() * shares / shares.sum()
    chi2, p = sps.chisquare(observed, expected)
    return SampleRatio(tuple(int(c) for c in observed), tuple(float(e) for e in expected),
                       float(chi2), float(p), bool(p < threshold))


def mixture_width_factor(users: int, planned_users: int, alpha: float = 0.05) -> float:
    """How many standard errors wide an always-valid (1 - alpha) interval is after `users` users.

    The two-sided normal-mixture boundary (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon 2021,
    "Time-uniform, nonparametric, nonasymptotic confidence sequences", eq. (14); the mSPRT of
    Johari et al. 2017) for a sum S_t with variance V_t = t sigma^2 and mixing precision rho:

        |S_t - t mu| <= sqrt((V_t + rho) * log((V_t + rho) / (rho * alpha^2)))   for all t at once.

    Dividing by t and writing rho = eta sigma^2 and se^2 = sigma^2 / t gives

        |mean_t - mu| <= se_t * sqrt((1 + eta / t) * log((1 + t / eta) / alpha^2)),

    which applied to the asymptotic standard error of an estimator is the asymptotic confidence
    sequence of Waudby-Smith et al. (2023). eta is tuned so the boundary is tightest at the planned
    sample size: eta = t_opt / (2 log(1/alpha) + log(1 + 2 log(1/alpha))) (Howard et al. 2021).
    """
    if users <= 0:
        return float("inf")
    k = 2 * math.log(1 / alpha)
    eta = planned_users / (k + math.log(1 + k))
    return math.sqrt((1 + eta / users) * math.log((1 + users / eta) / alpha ** 2))


def sequential_decision(estimate: float, se: float, users: int, planned_users: int,
                        alpha: float = 0.05, srm: Optional[SampleRatio] = None,
                        guardrail_breaches: Sequence[str] = ()) -> Sequential:
    """Ship / no ship / keep running from an always-valid interval, safe to look at every day.

    Ship when the interval is wholly above zero; no ship when wholly below, when the sample ratio
    is off or a guardrail is breached, or when the planned sample is reached without a clear
    effect; otherwise keep running.
    """
    width = mixture_width_factor(users, planned_users, alpha) * se
    lower, upper = estimate - width, estimate + width
    seq = dict(estimate=estimate, lower=lower, upper=upper, users=users, planned_users=planned_users)
    if srm is not None and srm.flagged:
        return Sequential(**seq, decision="no ship",
                          reason=f"sample ratio mismatch (p = {srm.p_value:.2g}): the data are not trustworthy")
    if guardrail_breaches:
        return Sequential(**seq, decision="no ship", reason="guardrail breached: " + ", ".join(guardrail_breaches))
    if not math.isfinite(width):
        return Sequential(**seq, decision="keep running", reason="not enough data yet")
    if lower > 0:
        return Sequential(**seq, decision="ship", reason="always-valid interval above zero")
    if upper < 0:
        return Sequential(**seq, decision="no ship", reason="always-valid interval below zero")
    if users >= planned_users:
        return Sequential(**seq, decision="no ship",
                          reason="planned sample reached without a detectable effect")
    return Sequential(**seq, decision="keep running", reason="interval still contains zero")


def user_table(assignments: pd.DataFrame, exposures: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    """One row per assigned user: pre-period covariates, outcomes after assignment, offer funnel.

    Orders placed before a user's assignment are not the experiment's and are left out.
    """
    users = assignments.drop_duplicates("user_id").set_index("user_id")[
        ["variant", "assigned_time", "pre_orders", "pre_revenue"]]
    assigned_at = users["assigned_time"].reindex(orders["user_id"]).to_numpy()
    counted = orders[orders["order_time"].to_numpy() >= assigned_at]
    per_user = counted.groupby("user_id")["revenue"].agg(["size", "sum"])
    flags = ["offer_shown", "offer_clicked", "offer_accepted", "is_error"]
    by_user = exposures.groupby("user_id")
    table = users.join(per_user.set_axis(["orders", "revenue"], axis=1)).join(by_user[flags].max()) \
        .join(by_user["latency_ms"].mean())
    table[["orders", "revenue"]] = table[["orders", "revenue"]].fillna(0)
    table[flags] = table[flags].fillna(False).astype(bool)
    table["converted"] = (table["orders"] > 0).astype(float)
    return table.reset_index()[USER_COLUMNS]


def variant_summary(users: pd.DataFrame, variants: Sequence[str]) -> pd.DataFrame:
    """Per variant: users, conversion, AOV, revenue per visitor, offer funnel and guardrails."""
    g = users.groupby("variant")
    out = pd.DataFrame({
        "users": g.size(),
        "conversion_rate": g["converted"].mean(),
        "orders": g["orders"].sum(),
        "revenue": g["revenue"].sum(),
        "offer_impressions": g["offer_shown"].sum(),
        "offer_clicks": g["offer_clicked"].sum(),
        "offer_acceptances": g["offer_accepted"].sum(),
        "latency_ms_mean": g["latency_ms"].mean(),
        "latency_ms_p95": g["latency_ms"].quantile(0.95),
        "error_rate": g["is_error"].mean(),
    }).reindex(list(variants))
    out["aov"] = out["revenue"] / out["orders"]
    out["revenue_per_visitor"] = out["revenue"] / out["users"]
    return out[["users", "conversion_rate", "aov", "revenue_per_visitor", "orders", "revenue",
                "offer_impressions", "offer_clicks", "offer_acceptances", "latency_ms_mean",
                "latency_ms_p95", "error_rate"]]
