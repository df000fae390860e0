"""Which policy decides a request's offer: the exploration slice, the experiment's arm, or the
configured default; the scoring engine calls `OfferChooser.decide` once per answer.

- **Exploration slice**: a configured share of sessions (by a hash of the session id and a salt)
  gets an offer drawn uniformly from the actions, independent of anything the models see; the
  answer and the decision log carry `exploration: true` and the `assignment_probability`, so
  uplift can be learned from the shop's own logs (`intent_assets.experiments.uplift_learn`).
- **Experiment arms**: the control gets the shop's rules, a variant named `uplift` the uplift
  policy (`serving.uplift`), any other the propensity bands (`serving.policy.decide`).
- **No experiment**: `default_policy` (`model` or `uplift`).
An arm that needs the uplift model when none is loaded falls back to the bands, flagged.

An answer that is a base rate (no session known, Redis or the model unavailable) says nothing of
the shopper: it is left alone (`policy: base_rate`) whatever the slice or arm, so an outage never
sends every shopper the same offer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from serving.experiments import ExperimentDesign, assign, bucket
from serving.policy import ACTIONS, Decision, PolicyParams, decide, decide_by_rules
from serving.uplift import UpliftModel

log = logging.getLogger(__name__)

POLICIES = ("model", "uplift")
BASE_RATE_POLICY = "base_rate"
UPLIFT_VARIANT = "uplift"
FALLBACK_UPLIFT = "uplift_unavailable"


def load_uplift_model(path: str | Path | None) -> UpliftModel | None:
    """The uplift model at `path`, or None (logged) when there is none or it cannot be read."""
    if not path or not Path(path).exists():
        return None
    try:
        return UpliftModel.load(path)
    except (OSError, ValueError, KeyError) as error:
        log.error("uplift model at %s not loaded: %s", path, error)
        return None


@dataclass(frozen=True)
class ExplorationSlice:
    """The share of sessions whose offer is randomized, and the hashing salt."""

    share: float = 0.0
    salt: str = "exploration"
    actions: tuple[str, ...] = ACTIONS

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"exploration share must be in [0, 1], got {self.share}")
        unknown = set(self.actions) - set(ACTIONS)
        if unknown or not self.actions:
            raise ValueError(f"exploration actions must be some of {ACTIONS}, got {self.actions}")

    def assignment(self, session_id: str) -> tuple[str, float] | None:
        """(action, its assignment probability) for a session in the slice, else None."""
        if self.share <= 0.0:
            return None
        u = bucket(session_id, self.salt)
        if u >= self.share:
            return None
        # inside the slice u / share is uniform on [0, 1): it picks the action
        index = min(int(u / self.share * len(self.actions)), len(self.actions) - 1)
        return self.actions[index], 1.0 / len(self.actions)


@dataclass(frozen=True)
class Offer:
    """The decision and what the answer and the decision log say about how it was made."""

    decision: Decision
    policy: str                       # rules | model | uplift | exploration
    variant: str | None
    fields: dict[str, Any] = field(default_factory=dict)   # extra answer fields
    fallbacks: tuple[str, ...] = ()


@dataclass
class OfferChooser:
    params: PolicyParams = field(default_factory=PolicyParams)
    experiment: ExperimentDesign | None = None
    exploration: ExplorationSlice = field(default_factory=ExplorationSlice)
    uplift: UpliftModel | None = None
    default_policy: str = "model"

    def __post_init__(self) -> None:
        if self.default_policy not in POLICIES:
            raise ValueError(f"default policy must be one of {POLICIES}, got {self.default_policy!r}")

    def decide(self, user_id: str, session_id: str, row: Mapping[str, Any], probability: float,
               order_value: float | None, informed: bool = True) -> Offer:
        """The offer for one answer; `informed` is False when `probability` is a base rate."""
        variant = assign(user_id, self.experiment) if self.experiment is not None else None
        if not informed:
            by_model = decide(probability, self.params, order_value)
            return Offer(Decision(by_model.band, "leave_alone", probability,
                                  by_model.expected_values), BASE_RATE_POLICY, variant)
        explored = self.exploration.assignment(session_id)
        if explored is not None:
            action, p = explored
            by_model = decide(probability, self.params, order_value)
            return Offer(Decision(by_model.band, action, probability, by_model.expected_values),
                         "exploration", variant,
                         {"exploration": True, "assignment_probability": p})
        if variant is not None and variant == self.experiment.control:
            return Offer(decide_by_rules(row, probability, self.params, order_value), "rules",
                         variant)
        wants_uplift = variant == UPLIFT_VARIANT if variant is not None \
            else self.default_policy == "uplift"
        by_model = decide(probability, self.params, order_value)
        if not wants_uplift:
            return Offer(by_model, "model", variant)
        if self.uplift is None:
            return Offer(by_model, "model", variant, fallbacks=(FALLBACK_UPLIFT,))
        chosen = self.uplift.decide(row, probability, self.params)
        return Offer(Decision(by_model.band, chosen.action, probability, chosen.expected_margins),
                     "uplift", variant, {"uplift_model_version": self.uplift.version})

    def to_json(self) -> dict[str, Any]:
        """What /health says of the offer policies."""
        return {"default_policy": self.default_policy,
                "exploration_share": self.exploration.share,
                "uplift_model_version": self.uplift.version if self.uplift else None,
                "discount_budget": self.params.discount_budget}
