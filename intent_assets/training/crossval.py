"""Cross-validated tuning for small tables: every row left after the test split is used.

On a small table the holdout regime's fixed shares hurt twice: the booster learns from 60 % of
the rows and the calibrator from 10 %. Below `SMALL_TABLE_ROWS` rows, `train.fit_tuned`
instead cuts the non-test rows into folds (`splits.time_folds` / `splits.stratified_folds`) and

1. scores each Optuna trial by the mean over folds of the weighted PR-AUC, the fold boosters
   grown in lockstep and stopped early together on their mean validation PR-AUC, so one tree
   count fits every fold; the first trial is LightGBM's defaults;
2. keeps the best trial's out-of-fold margins: each row's margin comes from the fold model that
   was not trained on it, and the calibrator is fitted on those margins only;
3. with stratified folds, ships the best trial's fold boosters averaged into one
   (`ensemble.average_boosters`): the models the calibrator's margins come from, every non-test
   row in all of them but one. Forward time folds never learn from their last block, the rows
   nearest the test split, so there one booster is refitted on all non-test rows with the best
   parameters and tree count (its margins spread a little wider than the folds').

Why 100,000 rows: the holdout's calibration split then holds 10,000 rows (a few hundred to a
thousand positives at the rates this project sees), enough for a stable isotonic fit, and its
validation split 15,000; below it those shares thin out quickly. The price of folds is about
`CV_FOLDS` fits per trial instead of one, which at this size stays in the minutes on two cores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np

from intent_assets.reports.metrics import pr_auc
from intent_assets.training.tuning import (
    EARLY_STOPPING_ROUNDS,
    SEARCH_SPACE,
    DesignMatrix,
    Param,
    TuningResult,
    lgb_params,
    resolve,
    suggest,
)

SMALL_TABLE_ROWS = 100_000
REGIMES = ("auto", "holdout", "cross_validated")
# LightGBM's own defaults, the search's first trial once moved into the space (no depth limit
# becomes the deepest allowed, no regularisation the least, no class weight the lightest, the
# tree count the upper bound early stopping cuts): TPE's first trials are random, so with a
# small budget the search keeps a well-tried configuration unless the folds find a better one.
LIGHTGBM_DEFAULTS = {"num_leaves": 31, "max_depth": 12, "min_data_in_leaf": 20,
                     "learning_rate": 0.1, "num_iterations": 800, "feature_fraction": 1.0,
                     "bagging_fraction": 1.0, "lambda_l1": 0.0, "lambda_l2": 0.0,
                     "scale_pos_weight": 1.0}


def choose_regime(rows: int, regime: str = "auto", small_table_rows: int = SMALL_TABLE_ROWS,
                  backend: str = "optuna") -> str:
    """"cross_validated" below `small_table_rows` rows (in process only), else "holdout"."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    if regime == "cross_validated" and backend != "optuna":
        raise ValueError("cross-validated tuning runs in process: use the optuna backend")
    if regime != "auto":
        return regime
    return "cross_validated" if rows < small_table_rows and backend == "optuna" else "holdout"


@dataclass(frozen=True)
class FoldData:
    """One fold: the rows its booster learns from, and the rows it is validated on.

    `valid_rows` are the positions of the validation rows in the non-test table.
    """

    train: DesignMatrix
    valid: DesignMatrix
    valid_rows: np.ndarray


def default_trial(space: tuple[Param, ...]) -> dict:
    """LIGHTGBM_DEFAULTS clipped into a resolved space (parameters it lacks left out)."""
    out = {}
    for p in space:
        if p.name in LIGHTGBM_DEFAULTS:
            value = min(max(LIGHTGBM_DEFAULTS[p.name], p.low), p.high)
            out[p.name] = int(value) if p.kind == "int" else float(value)
    return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def lockstep(params: dict, folds: list[FoldData], datasets: list[tuple[lgb.Dataset, lgb.Dataset]],
             early_stopping_rounds: int = EARLY_STOPPING_ROUNDS
             ) -> tuple[int, list[lgb.Booster]]:
    """Grow one booster per fold, a tree each in turn; stop when the mean validation PR-AUC
    has not improved for `early_stopping_rounds`. Returns the best iteration and the boosters."""
    params = dict(params)
    rounds = int(params.pop("num_iterations", 100))
    boosters = []
    for dtrain, dvalid in datasets:
        booster = lgb.Booster(params=params, train_set=dtrain)
        booster.add_valid(dvalid, "validation")
        boosters.append(booster)
    best, best_iteration = -np.inf, 0
    for iteration in range(1, rounds + 1):
        scores = []
        for booster in boosters:
            booster.update()
            scores.append(booster.eval_valid()[0][2])
        mean = float(np.mean(scores))
        if mean > best:
            best, best_iteration = mean, iteration
        elif iteration - best_iteration >= early_stopping_rounds:
            break
    return best_iteration, boosters


@dataclass(frozen=True)
class CrossValidated:
    """The search's result, and the best trial's out-of-fold margins (NaN: never validated)."""

    tuning: TuningResult
    oof_margin: np.ndarray
    oof_fold: np.ndarray
    fold_pr_auc: list[float] = field(default_factory=list)
    # the best trial's fold boosters (grown past the best iteration by the early-stopping wait)
    boosters: list = field(default_factory=list)


def out_of_fold(boosters: list[lgb.Booster], folds: list[FoldData], n_rows: int,
                iteration: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Each validation row's margin from its own fold's booster, and each fold's PR-AUC."""
    margin = np.full(n_rows, np.nan)
    fold_of = np.full(n_rows, -1, dtype=np.int64)
    scores = []
    for k, (booster, fold) in enumerate(zip(boosters, folds)):
        raw = booster.predict(fold.valid.X, raw_score=True, num_iteration=iteration)
        margin[fold.valid_rows] = raw
        fold_of[fold.valid_rows] = k
        score = pr_auc(fold.valid.y, _sigmoid(raw), fold.valid.w)
        if score is None:
            raise ValueError(f"validation fold {k} has no positives: PR-AUC is undefined")
        scores.append(score)
    return margin, fold_of, scores


def check_folds(folds: list[FoldData]) -> None:
    """Every fold needs positives and negatives on both sides."""
    for k, fold in enumerate(folds):
        for role, m in (("training", fold.train), ("validation", fold.valid)):
            if not ((m.y == 1).any() and (m.y == 0).any()):
                raise ValueError(f"the {role} rows of fold {k} hold one class only; "
                                 "the table is too small for cross-validation")


def tune_cv(folds: list[FoldData], n_rows: int, ratio: float,
            space: tuple[Param, ...] = SEARCH_SPACE, n_trials: int = 20, seed: int = 0,
            early_stopping_rounds: int = EARLY_STOPPING_ROUNDS) -> CrossValidated:
    """Seeded Optuna TPE over `space`; objective: mean weighted PR-AUC over the folds.

    `ratio` is the class ratio (weighted negatives / positives) the relative bounds resolve to;
    `n_rows` the size of the non-test table the folds' `valid_rows` index into.
    """
    import optuna

    if n_trials < 1:
        raise ValueError("n_trials must be at least 1")
    check_folds(folds)
    resolved = resolve(space, ratio)
    datasets = []
    for fold in folds:
        dtrain = fold.train.dataset()
        datasets.append((dtrain, fold.valid.dataset(reference=dtrain)))
    history: list[dict] = []
    kept: dict[int, tuple] = {}
    best: dict = {"score": -np.inf, "boosters": []}

    def objective(trial) -> float:
        sampled = suggest(trial, resolved)
        started = time.perf_counter()
        iteration, boosters = lockstep(lgb_params(sampled, seed), folds, datasets,
                                       early_stopping_rounds)
        margin, fold_of, scores = out_of_fold(boosters, folds, n_rows, iteration)
        score = float(np.mean(scores))
        trial.set_user_attr("best_iteration", int(iteration))
        history.append({"trial": trial.number, "pr_auc": score,
                        "fold_pr_auc": [round(s, 5) for s in scores],
                        "best_iteration": int(iteration),
                        "seconds": round(time.perf_counter() - started, 3), "params": sampled})
        kept[trial.number] = (margin, fold_of, scores)
        if score > best["score"]:  # Optuna's best trial is the first with the highest score
            best.update(score=score, boosters=boosters)
        return score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(default_trial(resolved))
    study.optimize(objective, n_trials=n_trials)
    chosen = study.best_trial
    iteration = int(chosen.user_attrs["best_iteration"])
    tuning = TuningResult(best_params={**chosen.params, "num_iterations": iteration},
                          best_pr_auc=float(chosen.value), best_iteration=iteration,
                          history=history, space=resolved)
    margin, fold_of, scores = kept[chosen.number]
    return CrossValidated(tuning, margin, fold_of, list(scores), list(best["boosters"]))
