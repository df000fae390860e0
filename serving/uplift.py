"""The uplift policy: each offer's learned effect becomes the action with the highest expected
incremental margin, under a discount budget.

An uplift model (written by the `uplift_model` asset) is a directory: `manifest.json` (features,
effects, a sample of training-set effects that sets the budget's threshold) and one LightGBM
booster per effect. Per session it predicts, for each offer, the uplift in purchase probability
and in expected order value (revenue per session), and the expected revenue with no offer.
Expected incremental margin: ``m * revenue_uplift - d * revenue_under_discount - offer cost``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from serving.lightgbm_fast import RowScorer
from serving.policy import PolicyParams

UPLIFT_ACTIONS = ("none", "discount", "upsell")
OFFER_ACTIONS = UPLIFT_ACTIONS[1:]
# What the served policy calls each offer (serving.policy.ACTIONS).
POLICY_ACTION = {"none": "leave_alone", "discount": "incentivize", "upsell": "upsell"}
# Numeric served features the uplift model reads; `propensity` is the purchase model's probability.
UPLIFT_FEATURES = (
    "propensity", "session_cart_value", "session_cart_items", "session_funnel_stage",
    "session_n_product_views", "session_current_product_views", "user_purchases_90d",
    "user_coupon_share",
)
# Every booster the model holds: (outcome, action) effects and the no-offer expected revenue.
EFFECTS = tuple(f"{o}:{a}" for o in ("conversion", "revenue") for a in OFFER_ACTIONS) + \
    ("revenue:none",)
MANIFEST = "manifest.json"


def incremental_margins(effects: Mapping[str, Any], params: PolicyParams) -> dict[str, Any]:
    """Expected incremental margin of each action against no offer, per session (arrays, or
    one session's floats)."""
    revenue_none = effects["revenue:none"]
    discount_uplift = effects["revenue:discount"]
    under_discount = np.maximum(revenue_none + discount_uplift, 0.0)
    return {
        "none": revenue_none * 0.0,
        "discount": params.margin * discount_uplift - params.discount * under_discount
        - params.incentive_cost,
        "upsell": params.margin * effects["revenue:upsell"] - params.upsell_cost,
    }


def discount_advantage(margins: Mapping[str, np.ndarray]) -> np.ndarray:
    """How much more the discount earns than the best other action."""
    return margins["discount"] - np.maximum(margins["none"], margins["upsell"])


def budget_threshold(advantage: np.ndarray, budget: float) -> float:
    """The least advantage a discount needs so at most `budget` of sessions like these get one."""
    advantage = np.asarray(advantage, dtype=float)
    if budget >= 1.0 or advantage.size == 0:
        return 0.0
    if budget <= 0.0:
        return float("inf")
    allowed = int(np.floor(budget * advantage.size))
    ranked = np.sort(advantage)[::-1]
    # the (allowed+1)-th best must be refused: the threshold is just above it
    cut = ranked[allowed] if allowed < ranked.size else -np.inf
    return float(max(0.0, np.nextafter(cut, np.inf)))


def choose(margins: Mapping[str, np.ndarray], threshold: float) -> np.ndarray:
    """Each session's action (UPLIFT_ACTIONS): the best by incremental margin, a discount only
    where it beats the others by at least `threshold` (and anything only where it pays)."""
    none, upsell = margins["none"], margins["upsell"]
    best_other = np.where(upsell > none, "upsell", "none").astype(object)
    gives_discount = discount_advantage(margins) >= max(threshold, np.finfo(float).tiny)
    return np.where(gives_discount & (margins["discount"] > 0), "discount", best_other)


def choose_with_budget(margins: Mapping[str, np.ndarray], budget: float) -> np.ndarray:
    """Actions for a batch of sessions, at most `budget` of them discounted (exact, by rank)."""
    return choose(margins, budget_threshold(discount_advantage(margins), budget))


@dataclass(frozen=True)
class UpliftDecision:
    """The uplift policy's action for one session and the margins it weighed."""

    action: str                       # serving.policy.ACTIONS
    expected_margins: dict[str, float]
    discount_threshold: float


class UpliftModel:
    """A trained uplift model: boosters per effect, the features, the budget's reference sample."""

    def __init__(self, boosters: Mapping[str, lgb.Booster], manifest: Mapping[str, Any]) -> None:
        missing = [e for e in EFFECTS if e not in boosters]
        if missing:
            raise ValueError(f"uplift model lacks effects {missing}")
        self.boosters = dict(boosters)
        self.manifest = dict(manifest)
        self.features = tuple(manifest["features"])
        self.version = str(manifest.get("version", "unversioned"))
        self._reference = {k: np.asarray(v, dtype=float)
                           for k, v in manifest.get("reference_effects", {}).items()}
        self._scorers: dict[str, RowScorer] | None = None
        self._thresholds: dict[tuple, float] = {}

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for effect, booster in self.boosters.items():
            booster.save_model(str(directory / _booster_file(effect)))
        (directory / MANIFEST).write_text(json.dumps(self.manifest, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "UpliftModel":
        directory = Path(directory)
        if not (directory / MANIFEST).is_file():
            raise FileNotFoundError(f"no uplift model at {directory} (no {MANIFEST})")
        manifest = json.loads((directory / MANIFEST).read_text())
        boosters = {e: lgb.Booster(model_file=str(directory / _booster_file(e))) for e in EFFECTS}
        return cls(boosters, manifest)

    # -- prediction ----------------------------------------------------------------------------
    def matrix(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The features of a frame (or mapping of columns) as a float matrix; missing is NaN."""
        return np.column_stack([np.asarray(columns[f], dtype=float) for f in self.features])

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {e: np.asarray(self.boosters[e].predict(x, num_threads=1), dtype=float)
                for e in EFFECTS}

    def predict_row(self, row: Mapping[str, Any], propensity: float) -> dict[str, float]:
        """One session's effects through LightGBM's single-row fast path."""
        if self._scorers is None:
            self._scorers = {e: RowScorer(b, len(self.features)) for e, b in self.boosters.items()}
        x = np.array([propensity if f == "propensity" else _number(row.get(f))
                      for f in self.features], dtype=np.float64)
        return {e: s.raw(x) for e, s in self._scorers.items()}

    def threshold(self, params: PolicyParams) -> float:
        """The discount threshold that keeps sessions like the training set's within the budget."""
        key = (params.margin, params.discount, params.incentive_cost, params.upsell_cost,
               params.discount_budget)
        if key not in self._thresholds:
            margins = incremental_margins(self._reference, params) if self._reference else None
            self._thresholds[key] = budget_threshold(
                discount_advantage(margins), params.discount_budget) if margins else 0.0
        return self._thresholds[key]

    def decide(self, row: Mapping[str, Any], propensity: float, params: PolicyParams
               ) -> UpliftDecision:
        """The action with the highest expected incremental margin for one live session."""
        margins = incremental_margins(self.predict_row(row, propensity), params)
        threshold = self.threshold(params)
        action = np.asarray(choose(margins, threshold)).item()
        return UpliftDecision(POLICY_ACTION[action],
                              {POLICY_ACTION[a]: round(float(v), 6) for a, v in margins.items()},
                              threshold)


def _booster_file(effect: str) -> str:
    return f"booster_{effect.replace(':', '_')}.txt"


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    return float(value)
