"""An experiment simulator with a known truth, to prove the readout's statistics.

Each user has a latent propensity that drives both the pre-period (orders and spend in the weeks
before the experiment, the CUPED covariate) and the in-experiment behaviour. Users are assigned by
`assignment.assign_many`, exposed once (the scoring API's decision), may see an offer, click it and
accept it, and convert with probability ``p_user * (1 + conversion_lift)`` in the treatment arms.
Every order's value is log-normal around the user's typical basket times ``(1 + aov_lift)``. So the
true relative uplifts are exactly `conversion_lift` on conversion and `aov_lift` on AOV, and
``(1 + conversion_lift) * (1 + aov_lift) - 1`` on revenue per visitor.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from serving.experiments import ExperimentDesign, assign_many


@dataclass(frozen=True)
class ExperimentConfig:
    """What to simulate: the design, the population and the true effects (relative, per treatment)."""

    name: str = "offer_bands_v1"
    variants: tuple[str, ...] = ("control", "treatment")
    weights: tuple[float, ...] = (0.5, 0.5)
    n_users: int = 20_000
    base_conversion: float = 0.06
    # How strongly the latent propensity spreads conversion across users (logit scale).
    propensity_spread: float = 1.5
    mean_order_value: float = 60.0
    order_value_sigma: float = 0.6
    pre_period_visits: int = 20
    conversion_lift: float = 0.0
    aov_lift: float = 0.0
    offer_rate: dict = field(default_factory=lambda: {"control": 0.30})
    default_offer_rate: float = 0.25
    click_rate: float = 0.2
    accept_rate: float = 0.5
    latency_ms: float = 4.0
    error_rate: float = 0.001
    # Fraction of treatment users whose records are lost (injects a sample-ratio mismatch).
    treatment_loss: float = 0.0
    start: str = "2026-11-01"
    days: int = 14
    seed: int = 0

    @property
    def design(self) -> ExperimentDesign:
        return ExperimentDesign(name=self.name, salt=f"{self.name}-salt", variants=self.variants,
                                weights=self.weights)


@dataclass(frozen=True)
class ExperimentData:
    """The three tables an experiment leaves: who was assigned, what they were shown, what they bought."""

    assignments: pd.DataFrame  # experiment, user_id, variant, assigned_time, pre_orders, pre_revenue
    exposures: pd.DataFrame  # experiment, user_id, variant, exposure_time, decision, offer_shown,
    #                          offer_clicked, offer_accepted, latency_ms, is_error
    orders: pd.DataFrame  # experiment, order_id, user_id, order_time, revenue


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def simulate_experiment(config: ExperimentConfig) -> ExperimentData:
    """Generate one experiment's assignments, exposures and orders under the configured truth."""
    rng = np.random.default_rng(config.seed)
    n = config.n_users
    user_ids = np.array([f"x{config.seed}-{i}" for i in range(n)], dtype=object)
    variants = np.array(assign_many(user_ids, config.design), dtype=object)
    treated = variants != config.design.control

    # The latent propensity: converts and spends more, before and during the experiment.
    z = rng.standard_normal(n)
    logit_base = np.log(config.base_conversion / (1 - config.base_conversion))
    # Capped so that any plausible lift keeps every probability valid (and the truth exact).
    p_user = np.minimum(_sigmoid(logit_base + config.propensity_spread * z), 0.6)
    basket = config.mean_order_value * np.exp(0.3 * z - 0.045)

    pre_orders = rng.binomial(config.pre_period_visits, p_user)
    pre_revenue = np.zeros(n)
    buyers = pre_orders > 0
    # The sum of k log-normal baskets, approximated by k times one draw: enough for a covariate.
    pre_revenue[buyers] = pre_orders[buyers] * basket[buyers] * rng.lognormal(
        -config.order_value_sigma ** 2 / 2, config.order_value_sigma, buyers.sum())

    p_now = np.where(treated, p_user * (1 + config.conversion_lift), p_user)
    if np.any(p_now > 1):
        raise ValueError("conversion_lift pushes some users' conversion probability above 1")
    converted = rng.random(n) < p_now
    n_orders = np.where(converted, 1 + rng.poisson(0.25, n), 0)
    order_user = np.repeat(np.arange(n), n_orders)
    lift = np.where(treated[order_user], 1 + config.aov_lift, 1.0)
    revenue = basket[order_user] * lift * rng.lognormal(
        -config.order_value_sigma ** 2 / 2, config.order_value_sigma, order_user.size)

    offer_p = np.array([config.offer_rate.get(v, config.default_offer_rate) for v in config.variants])
    index = pd.Index(config.variants).get_indexer(variants)
    shown = rng.random(n) < offer_p[index]
    clicked = shown & (rng.random(n) < config.click_rate)
    accepted = clicked & (rng.random(n) < config.accept_rate)

    start = pd.Timestamp(config.start, tz="UTC")
    span = dt.timedelta(days=config.days).total_seconds()
    assigned_time = start + pd.to_timedelta(np.sort(rng.random(n)) * span, unit="s")
    order_time = assigned_time[order_user] + pd.to_timedelta(rng.random(order_user.size) * 3600, unit="s")

    keep = ~(treated & (rng.random(n) < config.treatment_loss))
    keep_orders = keep[order_user]
    decision = np.where(shown, "incentivize", "none")
    assignments = pd.DataFrame({
        "experiment": config.name, "user_id": user_ids, "variant": variants,
        "assigned_time": assigned_time, "pre_orders": pre_orders, "pre_revenue": pre_revenue,
    })[keep].reset_index(drop=True)
    exposures = pd.DataFrame({
        "experiment": config.name, "user_id": user_ids, "variant": variants,
        "exposure_time": assigned_time, "decision": decision, "offer_shown": shown,
        "offer_clicked": clicked, "offer_accepted": accepted,
        "latency_ms": rng.gamma(4.0, config.latency_ms / 4.0, n),
        "is_error": rng.random(n) < config.error_rate,
    })[keep].reset_index(drop=True)
    orders = pd.DataFrame({
        "experiment": config.name,
        "order_id": [f"xo{config.seed}-{i}" for i in range(order_user.size)],
        "user_id": user_ids[order_user], "order_time": order_time, "revenue": revenue,
    })[keep_orders].reset_index(drop=True)
    return ExperimentData(assignments, exposures, orders)
