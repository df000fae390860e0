"""The decision policy: a calibrated purchase probability becomes an on-site action by expected value.

Leave alone (EV 0), incentivize (a discount whose uplift is largest on the fence) or upsell (an
add-on for a likely buyer): the action with the highest positive expected margin. The rules
policy (the shop's hand-set bands, the A/B control) maps the live session to an action instead.
docs/serving.md gives the formulas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from streaming_jobs.session_state import FUNNEL_CHECKOUT

ACTIONS = ("leave_alone", "incentivize", "upsell")
BANDS = ("unlikely", "on_the_fence", "likely")
# What a shopper is shown for each action (None: nothing).
OFFERS = {"leave_alone": None, "incentivize": "discount", "upsell": "upsell"}

RULES_COLUMNS: tuple[str, ...] = (
    "session_cart_value", "session_cart_items", "session_funnel_stage",
    "session_n_product_views", "session_current_product_views",
)
# Rules bands from most to least promising, as the shop wrote them, and the shop's action for each.
RULE_BANDS: tuple[str, ...] = ("checkout", "cart_high_value", "cart", "engaged", "browsing")
RULES_ACTIONS = {"checkout": "upsell", "cart_high_value": "incentivize", "cart": "incentivize",
                 "engaged": "leave_alone", "browsing": "leave_alone"}
REPEAT_PRODUCT_VIEWS = 2  # the product on screen seen at least this often in the session
MANY_PRODUCT_VIEWS = 5


@dataclass(frozen=True)
class PolicyParams:
    """Economics of the decision; every amount in the shop's currency."""

    aov: float = 80.0                 # average order value, used when the request gives none
    margin: float = 0.35              # gross margin fraction m of an order
    discount: float = 0.10            # incentive: fraction d of the order given away
    max_uplift: float = 0.20          # incentive: uplift in purchase probability at p = 0.5
    incentive_cost: float = 0.50      # incentive: cost of showing it (per shopper shown)
    upsell_take_rate: float = 0.15    # upsell: share of buyers who add the offered item
    upsell_value: float = 25.0        # upsell: revenue the added item brings
    upsell_cost: float = 0.30         # upsell: opportunity cost of the slot
    rules_cart_value: float = 60.0    # rules policy: a cart at or above this is "high value"
    discount_budget: float = 0.20     # uplift policy: at most this share of sessions discounted

    def __post_init__(self) -> None:
        for name in ("aov", "upsell_value", "rules_cart_value"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("margin", "discount", "max_uplift", "upsell_take_rate", "discount_budget"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("incentive_cost", "upsell_cost"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def rules(self) -> "RulesPolicy":
        """The shop's rules policy these economics go with (the A/B control)."""
        return RulesPolicy(cart_value=self.rules_cart_value)


@dataclass(frozen=True)
class RulesPolicy:
    """The shop's pre-model rules: one object for the A/B control and the rules baseline."""

    cart_value: float = PolicyParams.rules_cart_value  # a cart at or above this is "high value"

    def bands(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The rules band (one of RULE_BANDS) of every row."""
        return rules_band(columns, self.cart_value)

    def action(self, row: Mapping[str, Any]) -> str:
        """The rules' action for one live session's feature row."""
        return RULES_ACTIONS[self.bands({c: [row.get(c)] for c in RULES_COLUMNS})[0]]


@dataclass(frozen=True)
class Decision:
    """What to do for one shopper, and why in money."""

    band: str
    action: str
    probability: float
    expected_values: dict[str, float]

    def to_json(self) -> dict:
        return {"band": self.band, "action": self.action,
                "expected_values": self.expected_values}


def uplift(p: float, params: PolicyParams) -> float:
    """The incentive's expected rise in purchase probability at probability p."""
    return params.max_uplift * 4.0 * p * (1.0 - p)


def incentive_value(p: float, params: PolicyParams, order_value: float | None = None) -> float:
    """Expected margin of incentivizing a shopper at probability p, relative to doing nothing."""
    aov = order_value if order_value and order_value > 0 else params.aov
    return aov * (uplift(p, params) * (params.margin - params.discount) - p * params.discount) \
        - params.incentive_cost


def upsell_value(p: float, params: PolicyParams) -> float:
    """Expected margin of showing an upsell at probability p, relative to doing nothing."""
    return p * params.upsell_take_rate * params.upsell_value * params.margin - params.upsell_cost


def incentive_band(params: PolicyParams, order_value: float | None = None
                   ) -> tuple[float, float] | None:
    """The interval [p_lo, p_hi] where incentivizing has positive expected value (None if empty).

    EV_incentive is the quadratic ``-a p^2 + b p - c`` with a = 4 U (m - d) AOV,
    b = AOV (4 U (m - d) - d), c = incentive_cost.
    """
    aov = order_value if order_value and order_value > 0 else params.aov
    k = 4.0 * params.max_uplift * (params.margin - params.discount) * aov
    a, b, c = k, k - params.discount * aov, params.incentive_cost
    if a <= 0:
        return None  # the discount eats the whole margin: never worth it
    disc = b * b - 4 * a * c
    if disc <= 0:
        return None
    root = math.sqrt(disc)
    lo, hi = (b - root) / (2 * a), (b + root) / (2 * a)
    lo, hi = max(lo, 0.0), min(hi, 1.0)
    return (lo, hi) if lo < hi else None


def upsell_threshold(params: PolicyParams) -> float | None:
    """The probability above which an upsell pays (None if it never does)."""
    gain = params.upsell_take_rate * params.upsell_value * params.margin
    if gain <= 0:
        return None
    threshold = params.upsell_cost / gain
    return threshold if threshold <= 1.0 else None


def band_of(p: float, params: PolicyParams, order_value: float | None = None) -> str:
    """Where p sits relative to the on-the-fence interval: unlikely, on_the_fence or likely."""
    fence = incentive_band(params, order_value)
    if fence is None:
        threshold = upsell_threshold(params)
        return "likely" if threshold is not None and p >= threshold else "unlikely"
    lo, hi = fence
    if p < lo:
        return "unlikely"
    return "on_the_fence" if p <= hi else "likely"


def decide(p: float, params: PolicyParams, order_value: float | None = None) -> Decision:
    """The action with the highest positive expected value for a shopper at probability p."""
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"probability must be in [0, 1], got {p}")
    values = {"leave_alone": 0.0,
              "incentivize": incentive_value(p, params, order_value),
              "upsell": upsell_value(p, params)}
    action = max(ACTIONS, key=lambda name: (values[name], name == "leave_alone"))
    return Decision(band=band_of(p, params, order_value), action=action, probability=p,
                    expected_values={k: round(v, 6) for k, v in values.items()})


def _numbers(values: Any) -> np.ndarray:
    """A column as floats: non-numbers and missing values are NaN."""
    if isinstance(values, pd.Series):
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    return np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
                     for v in values], dtype=np.float64)


def rules_band(columns: Mapping[str, Any], cart_value_threshold: float) -> np.ndarray:
    """The shop's hand-set band (one of RULE_BANDS) of every row; missing values count as zero.

    `columns` is a DataFrame or a mapping of column name to values (one request: lists of one).
    """
    missing = [c for c in RULES_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"the rules need columns {missing}")
    f = {c: np.nan_to_num(_numbers(columns[c]), nan=0.0) for c in RULES_COLUMNS}
    has_cart = f["session_cart_items"] > 0
    conditions = [
        f["session_funnel_stage"] >= FUNNEL_CHECKOUT,
        has_cart & (f["session_cart_value"] >= cart_value_threshold),
        has_cart,
        (f["session_current_product_views"] >= REPEAT_PRODUCT_VIEWS)
        | (f["session_n_product_views"] >= MANY_PRODUCT_VIEWS),
    ]
    return np.select(conditions, list(RULE_BANDS[:-1]), default=RULE_BANDS[-1]).astype(object)


def decide_by_rules(row: Mapping[str, Any], p: float, params: PolicyParams,
                    order_value: float | None = None) -> Decision:
    """The rules policy's action for one live session; band and expected values still say what
    the model thinks (so the log shows what either policy would have done)."""
    by_model = decide(p, params, order_value)
    return Decision(band=by_model.band, action=params.rules.action(row), probability=p,
                    expected_values=by_model.expected_values)
