"""Train, tune, calibrate, evaluate and save the purchase-intent model, on any labelled table.

`train_model` is what the `tuned_model` / `calibrated_model` assets and `intent train` both run:

1. features: every column that is not an id (`*_id`, the label, the weight, the time column,
   `date`, `event_timestamp`); numbers stay numbers, strings become categoricals whose category
   list is learned on the train split, timestamps are dropped;
2. splits: by session start time when there is a time column, otherwise stratified by label,
   never putting one session (the group column, when the table has it) in two splits;
3. bounce negatives of the train and validation splits downsampled, weights compensated;
4. Optuna TPE over `tuning.SEARCH_SPACE`, PR-AUC on validation with early stopping;
5. the final booster refitted on train + validation with the early-stopped tree count;
6. Platt or isotonic chosen on the calibration split;
7. test-split metrics, TreeSHAP global importance, and the artifact (directory + model.tar.gz).

That is the "holdout" regime. Below `crossval.SMALL_TABLE_ROWS` rows the "cross_validated" one
keeps the same test split and uses every other row: folds instead of steps 3-4, the calibrator
fitted on out-of-fold margins (step 6), and as the final booster (step 5) the fold boosters
averaged (stratified folds) or one refitted on all non-test rows (forward time folds).
The manifest's `regime` says which ran and how many rows each role got.

Steps 1-5 are `fit_tuned` (a `TunedModel`, saved between assets), 6-7 `finish_model`; both
recompute the same deterministic splits from the table, and `finish_model` refuses a table
whose splits differ from the ones the model was tuned on.

Every split is vectorized by `serving.model.Vectorizer`, the code the scorers run, so a value
means the same thing in training and in serving.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from intent_assets.training.calibration import CalibrationResult, calibrate
from intent_assets.training.result import TrainResult, TunedModel
from intent_assets.training.families import family_explanation_summary, fit_family, tune_family
from intent_assets.reports.metrics import classification_metrics
from intent_assets.training.ensemble import average_boosters
from intent_assets.training.crossval import (
    SMALL_TABLE_ROWS,
    FoldData,
    choose_regime,
    tune_cv,
)
from intent_assets.training.table import (
    base_rates,
    design,
    id_columns,
    infer_features,
    label_values,
    project_feature_defaults,
    row_weights,
)
from intent_assets.training.splits import (
    CV_FOLDS,
    Splits,
    part_summary,
    stratified_folds,
    stratified_splits,
    time_folds,
    time_splits,
)
from intent_assets.training.tuning import (
    SEARCH_SPACE,
    Param,
    TuningResult,
    fit,
    lgb_params,
    neg_pos_ratio,
    space_to_json,
    tune_optuna,
    tuning_from_json,
    tuning_to_json,
)
from intent_assets.training.weights import BOUNCE_KEEP_RATE, downsample_bounces
from streaming_jobs.feature_spec import DEFAULT_SERVICE, FEATURE_VIEWS
from serving.families import LIGHTGBM
from serving.model import (
    Calibrator,
    Feature,
    ModelArtifact,
    Vectorizer,
    explanation_summary,
    save_artifact,
)

# Rows of the test split the global importance is averaged over.
EXPLANATION_ROWS = 5_000


def make_splits(df: pd.DataFrame, label: str, time_column: str | None,
                group_column: str | None = "session_id", seed: int = 0) -> Splits:
    """Time splits with a time column, stratified ones without; groups kept whole."""
    group = group_column if group_column and group_column in df.columns else None
    if time_column:
        return time_splits(df, time_column, group_column=group)
    return stratified_splits(df, label, group_column=group, seed=seed)


def training_splits(df: pd.DataFrame, label: str, time_column: str | None,
                    group_column: str | None = "session_id", seed: int = 0) -> Splits:
    """The splits the model is tuned, calibrated and tested on (baselines use the same)."""
    return make_splits(df, label, time_column, group_column, seed)


def splits_fingerprint(splits: Splits, key_column: str | None) -> dict[str, str]:
    """Per split, rows and an order-free hash of its keys: equal iff the same rows."""
    out = {}
    for name, part in splits.items():
        keyed = part[key_column].astype(str) if key_column else part
        hashed = pd.util.hash_pandas_object(keyed, index=False).to_numpy(dtype=np.uint64)
        out[name] = f"{len(part)}:{int(hashed.sum(dtype=np.uint64)):016x}"
    return out


Tuner = Callable[..., TuningResult]
TUNING_BACKENDS = ("optuna", "sagemaker")


def fit_tuned(df: pd.DataFrame, label: str, *, time_column: str | None = None,
              feature_service: str = DEFAULT_SERVICE, n_trials: int = 20,
              seed: int = 0, weight_column: str | None = "weight",
              group_column: str | None = "session_id",
              defaults: Mapping[str, Any] | None = None,
              space: tuple[Param, ...] = SEARCH_SPACE,
              bounce_keep_rate: float = BOUNCE_KEEP_RATE, refit_on_validation: bool = True,
              backend: str = "optuna", tuner: Tuner | None = None, regime: str = "auto",
              small_table_rows: int = SMALL_TABLE_ROWS,
              features: Sequence[str] | None = None, family: str = LIGHTGBM,
              max_train_rows: int | None = None) -> TunedModel:
    """Split, pick features, downsample bounces, search hyperparameters, fit the final booster.

    `features` (a feature service's list, e.g. `feature_spec.service_features`) fixes the
    feature columns: every one must be in the table, and each is kept even without values;
    without it every column that is not an id is a feature.

    `backend` "optuna" searches in process; "sagemaker" needs `tuner`, a function with the
    signature of `tuning.tune_optuna` (train, valid, space, n_trials=, seed=) that runs the
    search elsewhere and returns a TuningResult. `defaults` maps feature names to what scorers
    assume for an absent value (default: `project_feature_defaults()`; unknown names: missing).
    `regime` "auto" cross-validates below `small_table_rows` rows with the optuna backend
    (see `crossval`), else keeps the holdout splits.

    `family` other than "lightgbm" tunes a challenger (`families`) on the same splits and
    features, in the holdout regime; `max_train_rows` caps the rows it is fitted on (a seeded
    sample of the downsampled train split and of the refit's rows), for a quick comparison.
    """
    started = time.perf_counter()
    if backend not in TUNING_BACKENDS:
        raise ValueError(f"backend must be one of {TUNING_BACKENDS}, got {backend!r}")
    if backend == "sagemaker" and tuner is None:
        raise ValueError("the sagemaker backend needs a tuner (see intent_resources.sagemaker_tuning)")
    search = tuner or tune_optuna
    if df.empty:
        raise ValueError("the table is empty")
    label_values(df, label)
    if time_column and time_column not in df.columns:
        raise KeyError(f"time column {time_column!r} is not in the table")
    defaults = project_feature_defaults() if defaults is None else dict(defaults)
    key_column = "snapshot_id" if "snapshot_id" in df.columns else None
    group = group_column if group_column and group_column in df.columns else None

    splits = make_splits(df, label, time_column, group, seed)
    chosen = "holdout" if family != LIGHTGBM else choose_regime(len(df), regime,
                                                                small_table_rows, backend)
    for name, part in splits.items():
        if (chosen == "holdout" or name == "test") and not (label_values(part, label) == 1).any():
            raise ValueError(f"the {name} split has no positives; the table is too small")
    if features is not None:
        lacking = [f for f in features if f not in df.columns]
        if lacking:
            raise ValueError(f"the table lacks features of service {feature_service!r}: {lacking}")
        # the table's column order, so a model does not change with the service's order
        candidates = [c for c in df.columns if c in set(features)]
        required = tuple(candidates)
    else:
        candidates = [c for c in df.columns if c not in id_columns(df.columns, label, time_column,
                                                                  weight_column)]
        required = ()
    common = dict(label=label, time_column=time_column, group_column=group,
                  weight_column=weight_column if weight_column in df.columns else None,
                  key_column=key_column, feature_service=feature_service, seed=seed,
                  backend=backend, refit_on_validation=refit_on_validation,
                  split_fingerprint=splits_fingerprint(splits, key_column),
                  small_table_rows=small_table_rows, family=family)
    if chosen == "cross_validated":
        return _fit_cross_validated(splits, candidates, defaults, common, space, n_trials,
                                    started, required)
    features, dropped = infer_features(splits.train, candidates, defaults, keep=required)
    if not features:
        raise ValueError("the table has no usable feature columns")
    vectorizer = Vectorizer(features)

    w_col = weight_column or "weight"
    train_ds = downsample_bounces(splits.train, label, w_col, bounce_keep_rate, seed, key_column)
    valid_ds = downsample_bounces(splits.validation, label, w_col, bounce_keep_rate, seed,
                                  key_column)
    train_frame = _capped(train_ds.frame, max_train_rows, seed)
    train_m = design(vectorizer, train_frame, label, w_col, normalize=True)
    valid_m = design(vectorizer, splits.validation, label, weight_column)
    prepared = time.perf_counter()

    if family == LIGHTGBM:
        tuning = search(train_m, valid_m, space, n_trials=n_trials, seed=seed)
        validation_margin = tuning.validation_margin
        params = lgb_params(tuning.best_params, seed)
    else:
        tuning, validation_margin = tune_family(family, train_m, valid_m, n_trials, seed)
        params = dict(tuning.best_params)
    searched = time.perf_counter()

    fit_on = train_m
    if refit_on_validation:
        both = _capped(pd.concat([train_ds.frame, valid_ds.frame]), max_train_rows, seed)
        fit_on = design(vectorizer, both, label, w_col, normalize=True)
    booster = fit(params, fit_on) if family == LIGHTGBM else \
        fit_family(family, params, fit_on, None, seed)[0]
    fitted = time.perf_counter()

    rows = {name: int(len(part)) for name, part in splits.items()}
    rows.update(train_after_downsampling=int(len(train_ds.frame)),
                validation_after_downsampling=int(len(valid_ds.frame)),
                **({"max_train_rows": int(max_train_rows)} if max_train_rows else {}),
                fitted=int(len(fit_on.y)))
    return TunedModel(
        booster=booster, features=features, tuning=tuning, params=params, rows=rows,
        seconds={"prepare": round(prepared - started, 3), "tuning": round(searched - prepared, 3),
                 "final_fit": round(fitted - searched, 3)},
        downsampling={"train": train_ds.info, "validation": valid_ds.info},
        dropped_columns=dropped, validation_margin=validation_margin, **common)


def _capped(frame: pd.DataFrame, rows: int | None, seed: int) -> pd.DataFrame:
    """At most `rows` rows of `frame`, a seeded uniform sample (weights keep their meaning)."""
    if not rows or len(frame) <= rows:
        return frame
    return frame.sample(n=rows, random_state=seed).sort_index()


def development_rows(splits: Splits) -> pd.DataFrame:
    """Every row but the test split's: what the cross-validated regime learns from."""
    return pd.concat([splits.train, splits.validation, splits.calibration])


def _fit_cross_validated(splits: Splits, candidates: list[str], defaults: Mapping[str, Any],
                         common: dict, space: tuple[Param, ...], n_trials: int,
                         started: float, required: Sequence[str] = ()) -> TunedModel:
    """Tune on folds of the non-test rows, keep out-of-fold margins, refit on them all.

    No bounce downsampling here: it buys speed on large tables, and a small table's point is
    to use every row.
    """
    label, group, seed = common["label"], common["group_column"], common["seed"]
    weight_column, time_column = common["weight_column"], common["time_column"]
    dev = development_rows(splits)
    features, dropped = infer_features(dev, candidates, defaults, keep=required)
    if not features:
        raise ValueError("the table has no usable feature columns")
    vectorizer = Vectorizer(features)
    folds = (time_folds(dev, time_column, group) if time_column
             else stratified_folds(dev, label, group, CV_FOLDS, seed))
    fold_data = [FoldData(design(vectorizer, dev[folds.train_mask(k)], label, weight_column,
                                 normalize=True),
                          design(vectorizer, dev[folds.valid_mask(k)], label, weight_column),
                          np.flatnonzero(folds.valid_mask(k)))
                 for k in range(folds.k)]
    dev_m = design(vectorizer, dev, label, weight_column, normalize=True)
    prepared = time.perf_counter()

    cv = tune_cv(fold_data, len(dev), neg_pos_ratio(dev_m.y, dev_m.w), space,
                 n_trials=n_trials, seed=seed)
    searched = time.perf_counter()
    params = lgb_params(cv.tuning.best_params, seed)
    if folds.method == "time":
        # forward folds never learn from their last block, the rows nearest the test split:
        # one booster refitted on every row uses them
        booster = fit(params, dev_m)
        learned = np.ones(len(dev), dtype=bool)
    else:
        # exchangeable folds: the fold boosters the calibrator's margins come from, averaged
        # (crossval, step 3); each row is in all of them but its own fold's
        booster = average_boosters(cv.boosters, cv.tuning.best_iteration)
        learned = np.logical_or.reduce([np.asarray(folds.train_mask(k)) for k in range(folds.k)])
    fitted = time.perf_counter()

    validated = cv.oof_fold >= 0
    key_column = common["key_column"]
    out_of_fold = pd.DataFrame({
        "key": (dev[key_column].astype(str).to_numpy() if key_column
                else np.arange(len(dev)).astype(str))[validated],
        "fold": cv.oof_fold[validated], "margin": cv.oof_margin[validated],
        "label": label_values(dev, label)[validated],
        "weight": row_weights(dev, weight_column)[validated],
        "group": (dev[group].astype(str).to_numpy()[validated] if group else None)})
    rows = {"test": int(len(splits.test)), "development": int(len(dev)),
            "out_of_fold": int(validated.sum()), "fitted": int(learned.sum())}
    not_applied = {"applied": False, "rows_in": int(len(dev)), "rows_out": int(len(dev)),
                   "reason": "small table: every row is kept"}
    return TunedModel(
        booster=booster, features=features, tuning=cv.tuning, params=params, rows=rows,
        seconds={"prepare": round(prepared - started, 3), "tuning": round(searched - prepared, 3),
                 "final_fit": round(fitted - searched, 3)},
        downsampling={"development": not_applied}, dropped_columns=dropped,
        regime="cross_validated",
        folds={**folds.summary(), "fold_pr_auc": [round(s, 5) for s in cv.fold_pr_auc]},
        out_of_fold=out_of_fold, **common)


def _calibrate(tuned: TunedModel, splits: Splits, vectorizer: Vectorizer
               ) -> tuple[CalibrationResult, dict]:
    """The calibrator, and the regime's record: which rows each role got.

    Holdout: fitted on the calibration split's margins. Cross-validated: on the out-of-fold
    margins, each from a fold booster that never saw its row.
    """
    if tuned.regime == "cross_validated":
        oof = tuned.out_of_fold
        if oof is None:
            raise ValueError("a cross-validated model needs its out-of-fold margins")
        groups = oof["group"].to_numpy() if tuned.group_column else None
        calibration = calibrate(oof["margin"].to_numpy(), oof["label"].to_numpy(),
                                oof["weight"].to_numpy(), groups)
        roles = {"tuning_folds": tuned.rows["development"],
                 "calibration_out_of_fold": int(len(oof)), "final_fit": tuned.rows["fitted"],
                 "test": int(len(splits.test))}
        development = part_summary(development_rows(splits), tuned.label, tuned.group_column,
                                   tuned.time_column)
        return calibration, {"name": "cross_validated", "rows": roles, "folds": tuned.folds,
                             "development": development,
                             "small_table_rows": tuned.small_table_rows}
    calib_m = design(vectorizer, splits.calibration, tuned.label, tuned.weight_column)
    groups = splits.calibration[tuned.group_column].to_numpy() if tuned.group_column else None
    calibration = calibrate(tuned.model.raw(calib_m.X), calib_m.y,
                            calib_m.w, groups)
    roles = {"tuning_train": tuned.rows["train"], "tuning_validation": tuned.rows["validation"],
             "calibration": int(len(splits.calibration)), "final_fit": tuned.rows["fitted"],
             "test": int(len(splits.test))}
    return calibration, {"name": "holdout", "rows": roles,
                         "small_table_rows": tuned.small_table_rows}


def finish_model(tuned: TunedModel, df: pd.DataFrame, out_dir: str | Path, *,
                 versioned: bool = True, created_at: dt.datetime | None = None) -> TrainResult:
    """Calibrate a tuned model, measure it on the test split, explain it, save the artifact.

    `df` must be the table it was tuned on (checked through the splits). With `versioned`, the
    artifact goes to `out_dir/<version>/`, otherwise straight into `out_dir`.
    """
    started = time.perf_counter()
    label, weight_column = tuned.label, tuned.weight_column
    splits = make_splits(df, label, tuned.time_column, tuned.group_column, tuned.seed)
    if splits_fingerprint(splits, tuned.key_column) != tuned.split_fingerprint:
        raise ValueError("this table does not split into the rows the model was tuned on")
    vectorizer = Vectorizer(tuned.features)
    model = tuned.model

    calibration, regime = _calibrate(tuned, splits, vectorizer)

    test_m = design(vectorizer, splits.test, label, weight_column)
    test_raw = model.raw(test_m.X)
    test_p = calibration.calibrator.apply(test_raw)
    rng = np.random.default_rng(tuned.seed)
    sample = np.sort(rng.choice(len(test_m.X), size=min(EXPLANATION_ROWS, len(test_m.X)),
                                replace=False))
    explanations = (explanation_summary(tuned.booster, test_m.X[sample])
                    if tuned.family == LIGHTGBM else
                    family_explanation_summary(model, test_m.X[sample], vectorizer.feature_names))

    metrics = {
        "test": classification_metrics(test_m.y, test_p, test_m.w),
        "test_uncalibrated": classification_metrics(test_m.y, Calibrator("none").apply(test_raw),
                                                    test_m.w),
        "validation_pr_auc": tuned.tuning.best_pr_auc,
        "calibration_log_loss": calibration.log_losses,
    }
    seconds = {**tuned.seconds, "calibrate_and_evaluate": round(time.perf_counter() - started, 3)}
    cross_validated = tuned.regime == "cross_validated"
    manifest = {
        "model_family": tuned.family,
        "label": label,
        "time_column": tuned.time_column,
        "group_column": tuned.group_column,
        "weight_column": weight_column,
        "training_rows": tuned.rows,
        "metrics": metrics,
        "calibrator": calibration.to_json(),
        "hyperparameters": tuned.params,
        "best_iteration": tuned.tuning.best_iteration,
        "refit_on_validation": tuned.refit_on_validation,
        "tuning": {"method": "optuna-tpe" if tuned.backend == "optuna" else tuned.backend,
                   "seed": tuned.seed, "n_trials": len(tuned.tuning.history),
                   "objective": ("mean weighted average precision over the validation folds"
                                 if cross_validated else
                                 "weighted average precision on validation"),
                   "best_pr_auc": tuned.tuning.best_pr_auc,
                   "space": space_to_json(tuned.tuning.space), "history": tuned.tuning.history},
        "regime": regime,
        "downsampling": tuned.downsampling,
        "splits": splits.summary(label, tuned.group_column, tuned.time_column),
        "base_rates": base_rates(df, label, weight_column, tuned.group_column),
        "split_fingerprint": tuned.split_fingerprint,
        "dropped_columns": tuned.dropped_columns,
        "training_seconds": seconds,
        # the view each feature is read from online, by the feature contract
        "feature_views": {f.name: FEATURE_VIEWS[f.name] for f in tuned.features
                          if f.name in FEATURE_VIEWS},
    }
    saved = save_artifact(out_dir, model=model, features=tuned.features,
                          calibrator=calibration.calibrator, manifest=manifest,
                          explanations=explanations, feature_service=tuned.feature_service,
                          created_at=created_at, versioned=versioned)
    # score the test split with the saved artifact: what was measured is what was shipped
    artifact = ModelArtifact.load(saved.directory)
    shipped = artifact.predict(test_m.X)
    if not np.allclose(shipped, test_p, rtol=0, atol=1e-9):
        raise RuntimeError("the saved artifact does not reproduce the trained model's scores")
    return TrainResult(
        artifact_dir=saved.directory, tar_path=saved.tarball, version=saved.version,
        metrics=metrics, splits=splits,
        test_predictions=splits.test.assign(raw_score=test_raw, probability=shipped),
        tuning=tuned.tuning, calibration=calibration, features=list(tuned.features),
        dropped_columns=tuned.dropped_columns, downsampling=tuned.downsampling,
        seconds=seconds, manifest=artifact.manifest)


def train_model(df: pd.DataFrame, label: str, *, out_dir: str | Path,
                time_column: str | None = None,
                feature_service: str = DEFAULT_SERVICE, n_trials: int = 20,
                seed: int = 0, weight_column: str | None = "weight",
                group_column: str | None = "session_id",
                defaults: Mapping[str, Any] | None = None,
                space: tuple[Param, ...] = SEARCH_SPACE,
                bounce_keep_rate: float = BOUNCE_KEEP_RATE,
                refit_on_validation: bool = True,
                created_at: dt.datetime | None = None, regime: str = "auto",
                small_table_rows: int = SMALL_TABLE_ROWS) -> TrainResult:
    """Train the tuned, calibrated model on `df`; its artifact goes straight into `out_dir`."""
    tuned = fit_tuned(df, label, time_column=time_column, feature_service=feature_service,
                      n_trials=n_trials, seed=seed, weight_column=weight_column,
                      group_column=group_column, defaults=defaults, space=space,
                      bounce_keep_rate=bounce_keep_rate, refit_on_validation=refit_on_validation,
                      regime=regime, small_table_rows=small_table_rows)
    return finish_model(tuned, df, out_dir, versioned=False, created_at=created_at)
