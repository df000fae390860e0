"""The challenger families: one search space and one fit per family, searched like LightGBM.

Every family is tuned by the same seeded Optuna TPE on the same objective (weighted PR-AUC on the
validation split), with the same budget of trials, on the same design matrices (the LightGBM
model's features, its downsampled train split); the boosters stop early on validation like
LightGBM. What is fitted is a `serving.families` model, so training, the artifact and every
scorer hold the same object.

Spaces, and why:
- xgboost: the LightGBM space in XGBoost's names (depth 3-10, eta 0.03-0.3, 100-800 rounds,
  min_child_weight 1-100, row and column subsampling 0.5-1, L1/L2 1e-3-10, scale_pos_weight
  0.25-4 x the class ratio);
- catboost: symmetric trees of depth 4-8 (a single-row explanation stays cheap), 100-800
  iterations at 0.03-0.3, l2_leaf_reg 1-10, class weight as above;
- random_forest: 50-200 trees, depth 6-16, 5-200 rows per leaf, 20-80 % of the features per
  split, class weight as above;
- mlp: one or two ReLU layers of 16-128 units, L2 1e-5-0.1, learning rate 1e-4-1e-2 (Adam),
  early stopping on a tenth of the fitted rows.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from intent_assets.reports.metrics import pr_auc
from intent_assets.training.tuning import (
    DesignMatrix,
    Param,
    TuningResult,
    neg_pos_ratio,
    resolve,
    suggest,
)
from serving.calibration import Calibrator
from serving.families import CatBoostModel, XGBoostModel
from serving.forest import ForestModel, MLPModel

EARLY_STOPPING_ROUNDS = 50
THREADS = 2

SPACES: dict[str, tuple[Param, ...]] = {
    "xgboost": (
        Param("max_depth", "int", 3, 10),
        Param("eta", "float", 0.03, 0.3, log=True),
        Param("num_iterations", "int", 100, 800, log=True),
        Param("min_child_weight", "float", 1.0, 100.0, log=True),
        Param("subsample", "float", 0.5, 1.0),
        Param("colsample_bytree", "float", 0.5, 1.0),
        Param("alpha", "float", 1e-3, 10.0, log=True),
        Param("lambda", "float", 1e-3, 10.0, log=True),
        Param("scale_pos_weight", "float", 0.25, 4.0, log=True, relative_to="neg_pos_ratio"),
    ),
    "catboost": (
        Param("depth", "int", 4, 8),
        Param("learning_rate", "float", 0.03, 0.3, log=True),
        Param("num_iterations", "int", 100, 800, log=True),
        Param("l2_leaf_reg", "float", 1.0, 10.0, log=True),
        Param("scale_pos_weight", "float", 0.25, 4.0, log=True, relative_to="neg_pos_ratio"),
    ),
    "random_forest": (
        Param("n_estimators", "int", 50, 200, log=True),
        Param("max_depth", "int", 6, 16),
        Param("min_samples_leaf", "int", 5, 200, log=True),
        Param("max_features", "float", 0.2, 0.8),
        Param("scale_pos_weight", "float", 0.25, 4.0, log=True, relative_to="neg_pos_ratio"),
    ),
    "mlp": (
        Param("hidden_units", "int", 16, 128, log=True),
        Param("layers", "int", 1, 2),
        Param("alpha", "float", 1e-5, 1e-1, log=True),
        Param("learning_rate_init", "float", 1e-4, 1e-2, log=True),
    ),
}
CHALLENGERS = tuple(SPACES)


def _positive_weights(m: DesignMatrix, scale_pos_weight: float | None) -> np.ndarray:
    w = np.asarray(m.w, dtype=np.float64)
    return w if scale_pos_weight is None else np.where(m.y == 1, w * scale_pos_weight, w)


def _fit_xgboost(params: dict, train: DesignMatrix, valid: DesignMatrix | None, seed: int):
    import xgboost as xgb

    p = dict(params)
    rounds = int(p.pop("num_iterations"))
    dtrain = xgb.DMatrix(train.X, label=train.y, weight=train.w)
    booster_params = {"objective": "binary:logistic", "eval_metric": "aucpr",
                      "tree_method": "hist", "seed": seed, "nthread": THREADS, **p}
    evals, stop = [], None
    if valid is not None:
        evals, stop = [(xgb.DMatrix(valid.X, label=valid.y, weight=valid.w), "validation")], \
            EARLY_STOPPING_ROUNDS
    booster = xgb.train(booster_params, dtrain, num_boost_round=rounds, evals=evals,
                        early_stopping_rounds=stop, verbose_eval=False)
    best = (booster.best_iteration + 1) if valid is not None else rounds
    if valid is not None:
        booster = booster[:best]
    return XGBoostModel(booster), best


def _fit_catboost(params: dict, train: DesignMatrix, valid: DesignMatrix | None, seed: int):
    from catboost import CatBoost, Pool

    p = dict(params)
    rounds = int(p.pop("num_iterations"))
    model = CatBoost({"loss_function": "Logloss", "eval_metric": "PRAUC:use_weights=true",
                      "iterations": rounds, "random_seed": seed, "thread_count": THREADS,
                      "verbose": False, "allow_writing_files": False, **p})
    eval_set = None if valid is None else Pool(valid.X, valid.y, weight=valid.w)
    model.fit(Pool(train.X, train.y, weight=train.w), eval_set=eval_set,
              early_stopping_rounds=EARLY_STOPPING_ROUNDS if valid is not None else None,
              use_best_model=valid is not None)
    return CatBoostModel(model), int(model.tree_count_)


def _fit_forest(params: dict, train: DesignMatrix, valid: DesignMatrix | None, seed: int):
    from sklearn.ensemble import RandomForestClassifier

    p = dict(params)
    spw = p.pop("scale_pos_weight", None)
    forest = RandomForestClassifier(n_jobs=THREADS, random_state=seed, **p)
    forest.fit(train.X, train.y, sample_weight=_positive_weights(train, spw))
    return ForestModel.from_sklearn(forest), int(p["n_estimators"])


def _fit_mlp(params: dict, train: DesignMatrix, valid: DesignMatrix | None, seed: int):
    from sklearn.neural_network import MLPClassifier

    p = dict(params)
    units, layers = int(p.pop("hidden_units")), int(p.pop("layers"))
    prep = MLPModel.preparation(train.X)
    shell = MLPModel(prep["fill"], prep["flagged"], prep["mean"], prep["scale"], [], [])
    net = MLPClassifier(hidden_layer_sizes=(units,) * layers, activation="relu", solver="adam",
                        batch_size=512, max_iter=40, early_stopping=True, n_iter_no_change=5,
                        random_state=seed, **p)
    net.fit(shell.prepare(train.X), train.y, sample_weight=train.w)
    model = MLPModel(prep["fill"], prep["flagged"], prep["mean"], prep["scale"],
                     net.coefs_, net.intercepts_)
    return model, int(net.n_iter_)


_FITTERS = {"xgboost": _fit_xgboost, "catboost": _fit_catboost, "random_forest": _fit_forest,
            "mlp": _fit_mlp}


def fit_family(family: str, params: dict[str, Any], train: DesignMatrix,
               valid: DesignMatrix | None = None, seed: int = 0):
    """Fit one family with `params`; (model, rounds): the early-stopped count with `valid`."""
    if family not in _FITTERS:
        raise ValueError(f"unknown challenger family {family!r}; known: {CHALLENGERS}")
    return _FITTERS[family](params, train, valid, seed)


def tune_family(family: str, train: DesignMatrix, valid: DesignMatrix, n_trials: int = 20,
                seed: int = 0) -> tuple[TuningResult, np.ndarray]:
    """Seeded Optuna TPE over the family's space on validation PR-AUC; the best trial's
    validation margins come back too (the ensemble's weights are fitted on them)."""
    import optuna

    if n_trials < 1:
        raise ValueError("n_trials must be at least 1")
    resolved = resolve(SPACES[family], neg_pos_ratio(train.y, train.w))
    history: list[dict] = []
    best: dict[str, Any] = {"score": -np.inf, "margin": None}

    def objective(trial) -> float:
        sampled = suggest(trial, resolved)
        started = time.perf_counter()
        model, rounds = fit_family(family, sampled, train, valid, seed)
        margin = model.raw(valid.X)
        # probabilities, not margins: the same ranking, and what the metric expects
        score = pr_auc(valid.y, Calibrator("none").apply(margin), valid.w)
        if score is None:
            raise ValueError("the validation split has no positives: PR-AUC is undefined")
        trial.set_user_attr("best_iteration", int(rounds))
        history.append({"trial": trial.number, "pr_auc": float(score),
                        "best_iteration": int(rounds),
                        "seconds": round(time.perf_counter() - started, 3), "params": sampled})
        if score > best["score"]:
            best.update(score=score, margin=margin)
        return score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    trial = study.best_trial
    rounds = int(trial.user_attrs["best_iteration"])
    params = dict(trial.params)
    if family in ("xgboost", "catboost"):
        params["num_iterations"] = rounds  # the refit keeps the early-stopped count
    return (TuningResult(best_params=params, best_pr_auc=float(trial.value),
                         best_iteration=rounds, history=history, space=resolved),
            np.asarray(best["margin"], dtype=np.float64))


def family_explanation_summary(model, X: np.ndarray, names) -> dict:
    """Expected value and global importance (mean |contribution| per feature) over rows X, by
    the family's own reason method (`serving.families`)."""
    if len(X) == 0:
        raise ValueError("need at least one row to summarise explanations")
    contrib = model.shap(X)
    mean_abs = np.abs(contrib[:, :-1]).mean(axis=0)
    order = np.argsort(-mean_abs, kind="stable")
    return {"method": model.explanation_method, "rows": int(len(X)),
            "expected_value": float(contrib[0, -1]),
            "importance": [{"feature": names[i], "mean_abs_shap": float(mean_abs[i])}
                           for i in order]}
