"""Sessions whose response to each offer is heterogeneous and known: the uplift simulator.

Every session has observable signals (the served features the uplift model reads) and a hidden
trait drawn from them: *persuadables* buy more when offered a discount, *sure things* buy anyway,
*lost causes* do not buy either way, *sleeping dogs* buy less when nudged. Each action (none,
discount, upsell) has an exact purchase probability and expected order value per session, so the
true individual uplift of every offer, and its true incremental margin, is known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from serving.policy import PolicyParams
from serving.uplift import UPLIFT_ACTIONS, UPLIFT_FEATURES

__all__ = ["UPLIFT_ACTIONS", "UPLIFT_FEATURES", "TRAITS", "draw_outcomes", "exploration_log",
           "simulate_sessions"]

TRAITS = ("persuadable", "sure_thing", "lost_cause", "sleeping_dog")
# Logit shift of the purchase probability per trait (no offer), and what each offer adds to it.
_BASE = {"persuadable": -1.6, "sure_thing": 1.2, "lost_cause": -4.5, "sleeping_dog": -0.4}
_DISCOUNT = {"persuadable": 1.6, "sure_thing": 0.1, "lost_cause": 0.05, "sleeping_dog": -0.9}
_UPSELL = {"persuadable": 0.1, "sure_thing": 0.0, "lost_cause": 0.0, "sleeping_dog": -0.5}
# Share of buyers shown an upsell who add the upsold item, per trait.
_TAKE = {"persuadable": 0.15, "sure_thing": 0.30, "lost_cause": 0.05, "sleeping_dog": 0.05}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def simulate_sessions(n: int, seed: int, economics: PolicyParams = PolicyParams()
                      ) -> pd.DataFrame:
    """`n` sessions: features (UPLIFT_FEATURES), hidden trait, and per action the true purchase
    probability ``p_<action>``, expected order value ``value_<action>`` and incremental margin
    ``true_margin_<action>`` against doing nothing."""
    rng = np.random.default_rng(seed)
    stage = rng.choice([1, 2, 3], size=n, p=[0.55, 0.30, 0.15])
    loyalty = rng.standard_normal(n)
    coupon = np.clip(rng.beta(1.2, 3.0, n) + 0.1 * rng.standard_normal(n), 0.0, 1.0)
    views = 1 + rng.poisson(3.0 + 2.0 * stage)
    current_views = 1 + rng.binomial(views - 1, 0.2)
    cart_items = np.where(stage >= 2, 1 + rng.poisson(0.8, n), 0)
    cart_value = cart_items * rng.lognormal(np.log(35.0), 0.5, n)
    purchases_90d = rng.poisson(0.6 * np.exp(0.6 * loyalty))

    scores = np.column_stack([
        2.5 * coupon + 0.6 * (stage == 2) - 0.3,                          # persuadable
        1.0 * (stage - 1) + 0.8 * loyalty - 1.5 * coupon,                 # sure thing
        1.2 * (stage == 1) - 0.5 * loyalty - 0.2 * np.log1p(views),       # lost cause
        0.9 * loyalty - 2.0 * coupon + 0.4 * (views > 8) - 0.6,           # sleeping dog
    ])
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    trait_index = np.minimum((rng.random(n)[:, None] > np.cumsum(weights, axis=1)).sum(axis=1),
                             len(TRAITS) - 1)
    trait = np.array(TRAITS, dtype=object)[trait_index]

    def per_trait(table):
        return np.array([table[t] for t in TRAITS])[trait_index]

    def logit_base(shift):
        return -1.0 + 0.6 * (stage - 1) + 0.25 * np.log1p(views) + 0.3 * loyalty + shift

    base = logit_base(per_trait(_BASE))
    # What a perfect propensity model sees: the no-offer probability averaged over the traits.
    propensity = sum(weights[:, i] * _sigmoid(logit_base(_BASE[t])) for i, t in enumerate(TRAITS))
    basket = 0.6 * cart_value + rng.lognormal(np.log(45.0), 0.4, n) * np.exp(0.15 * loyalty)

    # the discount's pull grows with the shopper's taste for coupons (persuadables most)
    discount_shift = per_trait(_DISCOUNT) * (0.5 + coupon)
    # the best any model of the observables can know: each uplift averaged over the traits
    expected = {"discount": 0.0, "upsell": 0.0}
    for i, t in enumerate(TRAITS):
        logit = logit_base(_BASE[t])
        p0 = _sigmoid(logit)
        expected["discount"] += weights[:, i] * (_sigmoid(logit + _DISCOUNT[t] * (0.5 + coupon)) - p0)
        expected["upsell"] += weights[:, i] * (_sigmoid(logit + _UPSELL[t]) - p0)
    p = {"none": _sigmoid(base), "discount": _sigmoid(base + discount_shift),
         "upsell": _sigmoid(base + per_trait(_UPSELL))}
    value = {"none": basket, "discount": basket,
             "upsell": basket + per_trait(_TAKE) * economics.upsell_value}
    frame = pd.DataFrame({
        "session_id": [f"u{seed}-{i}" for i in range(n)],
        "propensity": propensity, "session_cart_value": cart_value,
        "session_cart_items": cart_items, "session_funnel_stage": stage,
        "session_n_product_views": views, "session_current_product_views": current_views,
        "user_purchases_90d": purchases_90d, "user_coupon_share": coupon,
        "trait": trait,
    })
    m, d = economics.margin, economics.discount
    gross_none = p["none"] * value["none"]
    for action in UPLIFT_ACTIONS:
        frame[f"p_{action}"] = p[action]
        frame[f"value_{action}"] = value[action]
        gross = p[action] * value[action]
        frame[f"true_uplift_{action}"] = p[action] - p["none"]
        frame[f"expected_uplift_{action}"] = expected.get(action, 0.0)
        frame[f"true_revenue_uplift_{action}"] = gross - gross_none
        given = d * gross if action == "discount" else 0.0
        cost = {"none": 0.0, "discount": economics.incentive_cost,
                "upsell": economics.upsell_cost}[action]
        frame[f"true_margin_{action}"] = m * (gross - gross_none) - given - cost
    assert list(frame.columns[1:1 + len(UPLIFT_FEATURES)]) == list(UPLIFT_FEATURES)
    return frame


def draw_outcomes(sessions: pd.DataFrame, actions: np.ndarray, seed: int,
                  economics: PolicyParams = PolicyParams()) -> pd.DataFrame:
    """Each session's outcome under the action it was given: converted, revenue (the order's
    value before the discount), the discount given, and the margin net of offer costs."""
    rng = np.random.default_rng(seed)
    actions = np.asarray(actions, dtype=object)
    p = np.select([actions == a for a in UPLIFT_ACTIONS],
                  [sessions[f"p_{a}"].to_numpy() for a in UPLIFT_ACTIONS])
    converted = rng.random(len(sessions)) < p
    basket = sessions["value_none"].to_numpy()
    take = (sessions["value_upsell"].to_numpy() - basket) / economics.upsell_value
    added = (actions == "upsell") & (rng.random(len(sessions)) < take)
    revenue = np.where(converted, basket + added * economics.upsell_value, 0.0)
    discounted = actions == "discount"
    given = np.where(discounted, economics.discount * revenue, 0.0)
    cost = np.where(discounted, economics.incentive_cost,
                    np.where(actions == "upsell", economics.upsell_cost, 0.0))
    return pd.DataFrame({"action": actions, "converted": converted.astype(int),
                         "revenue": revenue, "discount_given": given,
                         "incentive_spend": given + np.where(discounted, economics.incentive_cost, 0.0),
                         "margin": economics.margin * revenue - given - cost})


def exploration_log(n: int, seed: int, probabilities=(1 / 3, 1 / 3, 1 / 3),
                    economics: PolicyParams = PolicyParams()) -> pd.DataFrame:
    """A randomized exploration slice: each session's offer drawn with known probabilities,
    logged with its assignment probability, its outcome, and (simulated only) the truth."""
    sessions = simulate_sessions(n, seed, economics)
    rng = np.random.default_rng(seed + 1)
    probabilities = np.asarray(probabilities, dtype=float)
    index = rng.choice(len(UPLIFT_ACTIONS), size=n, p=probabilities / probabilities.sum())
    actions = np.array(UPLIFT_ACTIONS, dtype=object)[index]
    outcomes = draw_outcomes(sessions, actions, seed + 2, economics)
    return pd.concat([sessions, outcomes], axis=1).assign(
        assignment_probability=probabilities[index] / probabilities.sum())
