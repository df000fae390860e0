"""Meta-learners over LightGBM: each offer's effect on purchase and on revenue, from randomized logs.

The DR-learner (Kennedy 2020): outcome models per action are fitted on the other folds
(cross-fitting), each row gets the doubly robust pseudo-outcome
``mu_a - mu_0 + 1[A=a] (Y - mu_a) / e_a - 1[A=none] (Y - mu_0) / e_0`` with the logged assignment
probabilities e, and one LightGBM regression per offer learns the effect from it. The T-learner
(``mu_a - mu_0`` from per-action models) is kept as the simple peer.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from serving.uplift import EFFECTS, OFFER_ACTIONS, UPLIFT_ACTIONS

OUTCOMES = {"conversion": "converted", "revenue": "revenue"}
_BASE_PARAMS = {"learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 200,
                "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1,
                "lambda_l2": 1.0, "max_bin": 63, "verbose": -1, "num_threads": 1}


# The final stage regresses noisy pseudo-outcomes: fewer, larger leaves keep it from chasing noise.
_FINAL_PARAMS = {"num_leaves": 7, "min_data_in_leaf": 800, "learning_rate": 0.03}


def fit_booster(x: np.ndarray, y: np.ndarray, objective: str, seed: int, rounds: int = 150,
                feature_names: list[str] | None = None, final: bool = False) -> lgb.Booster:
    """One small LightGBM model (`binary` or `regression`)."""
    params = {**_BASE_PARAMS, **(_FINAL_PARAMS if final else {}), "objective": objective,
              "seed": seed, "deterministic": True}
    data = lgb.Dataset(x, label=y, feature_name=feature_names or "auto", free_raw_data=True)
    return lgb.train(params, data, num_boost_round=rounds)


def _objective(outcome: str) -> str:
    return "binary" if outcome == "conversion" else "regression"


def outcome_means(x: np.ndarray, y: np.ndarray, actions: np.ndarray, train: np.ndarray,
                  predict: np.ndarray, outcome: str, seed: int, rounds: int) -> dict[str, np.ndarray]:
    """Each action's outcome model fitted on `train` rows, predicted on `predict` rows."""
    means = {}
    for i, action in enumerate(UPLIFT_ACTIONS):
        rows = train & (actions == action)
        booster = fit_booster(x[rows], y[rows], _objective(outcome), seed + i, rounds)
        means[action] = booster.predict(x[predict], num_threads=1)
    return means


def dr_pseudo_outcomes(x: np.ndarray, y: np.ndarray, actions: np.ndarray, probability: np.ndarray,
                       outcome: str, folds: int, seed: int, rounds: int
                       ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Cross-fitted DR pseudo-outcomes per offer, and the cross-fitted no-offer mean."""
    n = len(y)
    fold = np.random.default_rng(seed).integers(0, folds, n)
    mu = {a: np.zeros(n) for a in UPLIFT_ACTIONS}
    for k in range(folds):
        held = fold == k
        for action, values in outcome_means(x, y, actions, ~held, held, outcome,
                                            seed + 10 * k, rounds).items():
            mu[action][held] = values
    control = (actions == "none") / probability
    pseudo = {}
    for action in OFFER_ACTIONS:
        treated = (actions == action) / probability
        pseudo[action] = mu[action] - mu["none"] + treated * (y - mu[action]) \
            - control * (y - mu["none"])
    return pseudo, mu["none"]


def fit_dr_learner(x: np.ndarray, converted: np.ndarray, revenue: np.ndarray,
                   actions: np.ndarray, probability: np.ndarray, feature_names: list[str],
                   folds: int = 2, seed: int = 0, rounds: int = 150) -> dict[str, lgb.Booster]:
    """One booster per EFFECTS entry: the offers' effects on conversion and revenue, and the
    expected revenue with no offer."""
    probability = np.asarray(probability, dtype=float)
    if np.any(probability <= 0) or np.any(probability > 1):
        raise ValueError("assignment probabilities must be in (0, 1]")
    missing = [a for a in UPLIFT_ACTIONS if not np.any(actions == a)]
    if missing:
        raise ValueError(f"the log has no randomized sessions for {missing}")
    boosters = {}
    for outcome, y in (("conversion", converted), ("revenue", revenue)):
        y = np.asarray(y, dtype=float)
        pseudo, _ = dr_pseudo_outcomes(x, y, actions, probability, outcome, folds, seed, rounds)
        for action in OFFER_ACTIONS:
            boosters[f"{outcome}:{action}"] = fit_booster(x, pseudo[action], "regression",
                                                          seed + 7, rounds, feature_names, True)
    none = actions == "none"
    boosters["revenue:none"] = fit_booster(x[none], np.asarray(revenue, float)[none], "regression",
                                           seed + 9, rounds, feature_names)
    assert set(boosters) == set(EFFECTS)
    return boosters


def t_learner_effects(x_train: np.ndarray, y_train: np.ndarray, actions: np.ndarray,
                      x_test: np.ndarray, outcome: str, seed: int = 0, rounds: int = 150
                      ) -> dict[str, np.ndarray]:
    """The T-learner's effect of each offer on `x_test`: per-action models' difference."""
    x = np.vstack([x_train, x_test])
    n = len(x_train)
    train = np.arange(len(x)) < n
    y = np.concatenate([np.asarray(y_train, float), np.zeros(len(x_test))])
    acts = np.concatenate([actions, np.full(len(x_test), "", dtype=object)])
    means = outcome_means(x, y, acts, train, ~train, outcome, seed, rounds)
    return {a: means[a] - means["none"] for a in OFFER_ACTIONS}
