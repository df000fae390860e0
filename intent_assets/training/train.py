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

Steps 1-5 are `fit_tuned` (a `TunedModel`, saved between assets), 6-7 `finish_model`; both
recompute the same deterministic splits from the table, and `finish_model` refuses a table
whose splits differ from the ones the model was tuned on.

Every split is vectorized by `serving.model.Vectorizer`, the code the scorers run, so a value
means the same thing in training and in serving.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from intent_assets.training.calibration import CalibrationResult, calibrate
from intent_assets.reports.metrics import classification_metrics
from intent_assets.training.splits import Splits, stratified_splits, time_splits
from intent_assets.training.tuning import (
    SEARCH_SPACE,
    DesignMatrix,
    Param,
    TuningResult,
    fit,
    lgb_params,
    space_to_json,
    tune_optuna,
    tuning_from_json,
    tuning_to_json,
)
from intent_assets.training.weights import BOUNCE_KEEP_RATE, downsample_bounces
from serving.model import (
    Calibrator,
    Feature,
    ModelArtifact,
    Vectorizer,
    explanation_summary,
    save_artifact,
)

DEFAULT_FEATURE_SERVICE = "intent_model_v1"
ID_COLUMN_NAMES = ("date", "event_timestamp")
# Categories seen in training, most frequent first; rarer ones are read as missing.
MAX_CATEGORIES = 200
# Rows of the test split the global importance is averaged over.
EXPLANATION_ROWS = 5_000


def project_feature_defaults() -> dict[str, Any]:
    """What a scorer assumes for an absent project feature: the state of an empty session.

    User and product features default to missing (None): a user or product without a feature
    row is joined as null in the training set, so "no row" at serving must look the same.
    """
    from streaming_jobs.feature_spec import PRODUCT_FEATURES, SESSION_FEATURES, USER_FEATURES

    defaults: dict[str, Any] = {name: default for name, _, default in SESSION_FEATURES}
    defaults.update({name: None for name, _, _ in USER_FEATURES + PRODUCT_FEATURES})
    return defaults


def id_columns(columns, label: str, time_column: str | None = None,
               weight_column: str | None = "weight") -> list[str]:
    """Columns that are not features: `*_id`, label, time column, date, event_timestamp, and any
    weight column: a weight describes how a row was sampled, and sampling weights can encode
    the future (how many examples a session ended up giving)."""
    skip = {label, *ID_COLUMN_NAMES}
    if weight_column:
        skip.add(weight_column)
    if time_column:
        skip.add(time_column)
    return [c for c in columns
            if c in skip or str(c).endswith("_id") or "weight" in str(c).lower()]


def infer_features(train: pd.DataFrame, columns, defaults: Mapping[str, Any] | None = None
                   ) -> tuple[list[Feature], dict[str, str]]:
    """Feature specs from the train split, and the columns left out with the reason."""
    defaults = dict(defaults or {})
    features: list[Feature] = []
    dropped: dict[str, str] = {}
    for name in columns:
        col = train[name]
        default = defaults.get(name)
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_integer_dtype(col):
            features.append(Feature(name, "int", _number_or_none(default)))
            continue
        if pd.api.types.is_float_dtype(col):
            if col.notna().any():
                features.append(Feature(name, "float", _number_or_none(default)))
            else:
                dropped[name] = "no values in the train split"
            continue
        if (pd.api.types.is_datetime64_any_dtype(col) or pd.api.types.is_timedelta64_dtype(col)):
            dropped[name] = "timestamps are not features"
            continue
        values = col.dropna()
        if values.empty:
            dropped[name] = "no values in the train split"
            continue
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and not values.map(lambda v: isinstance(v, str)).any():
            features.append(Feature(name, "float", _number_or_none(default)))
            continue
        counts = values.map(lambda v: v if isinstance(v, str) else str(v)).value_counts()
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_CATEGORIES]
        features.append(Feature(name, "categorical",
                                None if default is None else str(default),
                                tuple(value for value, _ in ranked)))
    return features, dropped


def _number_or_none(value: Any) -> float | int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _labels(df: pd.DataFrame, label: str) -> np.ndarray:
    if label not in df.columns:
        raise KeyError(f"label column {label!r} is not in the table")
    y = df[label]
    if y.isna().any():
        raise ValueError(f"label column {label!r} has nulls")
    values = pd.to_numeric(y.astype("int64") if y.dtype == bool else y, errors="coerce")
    if values.isna().any() or not values.isin([0, 1]).all():
        raise ValueError(f"label column {label!r} must hold only 0 and 1")
    return values.to_numpy(dtype=np.float64)


def _weights(df: pd.DataFrame, weight_column: str | None) -> np.ndarray:
    if weight_column and weight_column in df.columns:
        w = df[weight_column].to_numpy(dtype=np.float64)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weight column {weight_column!r} must be finite and >= 0")
        return w
    return np.ones(len(df))


def design(vectorizer: Vectorizer, df: pd.DataFrame, label: str, weight_column: str | None,
           normalize: bool = False) -> DesignMatrix:
    """A split as a DesignMatrix; `normalize` scales weights to mean 1 (for fitting)."""
    w = _weights(df, weight_column)
    if normalize and len(w):
        w = w / w.mean()
    return DesignMatrix(vectorizer.frame(df), _labels(df, label), w, vectorizer.feature_names,
                        vectorizer.categorical_indices)


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


@dataclass
class TunedModel:
    """A tuned, fitted booster before calibration, with everything needed to finish it."""

    booster: lgb.Booster
    features: list[Feature]
    tuning: TuningResult
    params: dict
    label: str
    time_column: str | None
    group_column: str | None
    weight_column: str | None
    key_column: str | None
    feature_service: str
    seed: int
    backend: str
    rows: dict
    seconds: dict
    downsampling: dict
    dropped_columns: dict
    refit_on_validation: bool
    split_fingerprint: dict

    def save(self, directory: str | Path) -> Path:
        """Write `booster.txt` and `tuned.json` into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "booster.txt").write_text(self.booster.model_to_string())
        state = {name: getattr(self, name) for name in _TUNED_FIELDS}
        state["features"] = [f.to_json() for f in self.features]
        state["tuning"] = tuning_to_json(self.tuning)
        (directory / "tuned.json").write_text(json.dumps(state, indent=2, default=_plain))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "TunedModel":
        directory = Path(directory)
        state = json.loads((directory / "tuned.json").read_text())
        booster = lgb.Booster(model_str=(directory / "booster.txt").read_text())
        return cls(booster=booster,
                   features=[Feature.from_json(f) for f in state.pop("features")],
                   tuning=tuning_from_json(state.pop("tuning")), **state)


_TUNED_FIELDS = ("params", "label", "time_column", "group_column", "weight_column", "key_column",
                 "feature_service", "seed", "backend", "rows", "seconds", "downsampling",
                 "dropped_columns", "refit_on_validation", "split_fingerprint")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def fit_tuned(df: pd.DataFrame, label: str, *, time_column: str | None = None,
              feature_service: str = DEFAULT_FEATURE_SERVICE, n_trials: int = 20,
              seed: int = 0, weight_column: str | None = "weight",
              group_column: str | None = "session_id",
              defaults: Mapping[str, Any] | None = None,
              space: tuple[Param, ...] = SEARCH_SPACE,
              bounce_keep_rate: float = BOUNCE_KEEP_RATE, refit_on_validation: bool = True,
              backend: str = "optuna", tuner: Tuner | None = None) -> TunedModel:
    """Split, pick features, downsample bounces, search hyperparameters, fit the final booster.

    `backend` "optuna" searches in process; "sagemaker" needs `tuner`, a function with the
    signature of `tuning.tune_optuna` (train, valid, space, n_trials=, seed=) that runs the
    search elsewhere and returns a TuningResult. `defaults` maps feature names to what scorers
    assume for an absent value (default: `project_feature_defaults()`; unknown names: missing).
    """
    started = time.perf_counter()
    if backend not in TUNING_BACKENDS:
        raise ValueError(f"backend must be one of {TUNING_BACKENDS}, got {backend!r}")
    if backend == "sagemaker" and tuner is None:
        raise ValueError("the sagemaker backend needs a tuner (see intent_resources.sagemaker_tuning)")
    search = tuner or tune_optuna
    if df.empty:
        raise ValueError("the table is empty")
    _labels(df, label)
    if time_column and time_column not in df.columns:
        raise KeyError(f"time column {time_column!r} is not in the table")
    defaults = project_feature_defaults() if defaults is None else dict(defaults)
    key_column = "snapshot_id" if "snapshot_id" in df.columns else None
    group = group_column if group_column and group_column in df.columns else None

    splits = make_splits(df, label, time_column, group, seed)
    for name, part in splits.items():
        if not (_labels(part, label) == 1).any():
            raise ValueError(f"the {name} split has no positives; the table is too small")
    candidates = [c for c in df.columns if c not in id_columns(df.columns, label, time_column,
                                                              weight_column)]
    features, dropped = infer_features(splits.train, candidates, defaults)
    if not features:
        raise ValueError("the table has no usable feature columns")
    vectorizer = Vectorizer(features)

    w_col = weight_column or "weight"
    train_ds = downsample_bounces(splits.train, label, w_col, bounce_keep_rate, seed, key_column)
    valid_ds = downsample_bounces(splits.validation, label, w_col, bounce_keep_rate, seed,
                                  key_column)
    train_m = design(vectorizer, train_ds.frame, label, w_col, normalize=True)
    valid_m = design(vectorizer, splits.validation, label, weight_column)
    prepared = time.perf_counter()

    tuning = search(train_m, valid_m, space, n_trials=n_trials, seed=seed)
    searched = time.perf_counter()

    params = lgb_params(tuning.best_params, seed)
    fit_on = train_m
    if refit_on_validation:
        fit_on = design(vectorizer, pd.concat([train_ds.frame, valid_ds.frame]), label, w_col,
                        normalize=True)
    booster = fit(params, fit_on)
    fitted = time.perf_counter()

    rows = {name: int(len(part)) for name, part in splits.items()}
    rows.update(train_after_downsampling=int(len(train_ds.frame)),
                validation_after_downsampling=int(len(valid_ds.frame)),
                fitted=int(len(fit_on.y)))
    return TunedModel(
        booster=booster, features=features, tuning=tuning, params=params, label=label,
        time_column=time_column, group_column=group,
        weight_column=weight_column if weight_column in df.columns else None,
        key_column=key_column, feature_service=feature_service, seed=seed, backend=backend,
        rows=rows,
        seconds={"prepare": round(prepared - started, 3), "tuning": round(searched - prepared, 3),
                 "final_fit": round(fitted - searched, 3)},
        downsampling={"train": train_ds.info, "validation": valid_ds.info},
        dropped_columns=dropped, refit_on_validation=refit_on_validation,
        split_fingerprint=splits_fingerprint(splits, key_column))


@dataclass(frozen=True)
class TrainResult:
    """Where the artifact went, what it scored, and everything the report needs."""

    artifact_dir: Path
    tar_path: Path
    version: str
    metrics: dict
    splits: Splits
    test_predictions: pd.DataFrame
    tuning: TuningResult
    calibration: CalibrationResult
    features: list[Feature]
    dropped_columns: dict[str, str]
    downsampling: dict
    seconds: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)


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
    booster = tuned.booster

    calib_m = design(vectorizer, splits.calibration, label, weight_column)
    groups = splits.calibration[tuned.group_column].to_numpy() if tuned.group_column else None
    calibration = calibrate(booster.predict(calib_m.X, raw_score=True), calib_m.y, calib_m.w,
                            groups)

    test_m = design(vectorizer, splits.test, label, weight_column)
    test_raw = booster.predict(test_m.X, raw_score=True)
    test_p = calibration.calibrator.apply(test_raw)
    rng = np.random.default_rng(tuned.seed)
    sample = np.sort(rng.choice(len(test_m.X), size=min(EXPLANATION_ROWS, len(test_m.X)),
                                replace=False))
    explanations = explanation_summary(booster, test_m.X[sample])

    metrics = {
        "test": classification_metrics(test_m.y, test_p, test_m.w),
        "test_uncalibrated": classification_metrics(test_m.y, Calibrator("none").apply(test_raw),
                                                    test_m.w),
        "validation_pr_auc": tuned.tuning.best_pr_auc,
        "calibration_log_loss": calibration.log_losses,
    }
    seconds = {**tuned.seconds, "calibrate_and_evaluate": round(time.perf_counter() - started, 3)}
    manifest = {
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
                   "objective": "weighted average precision on validation",
                   "best_pr_auc": tuned.tuning.best_pr_auc,
                   "space": space_to_json(tuned.tuning.space), "history": tuned.tuning.history},
        "downsampling": tuned.downsampling,
        "splits": splits.summary(label, tuned.group_column, tuned.time_column),
        "split_fingerprint": tuned.split_fingerprint,
        "dropped_columns": tuned.dropped_columns,
        "training_seconds": seconds,
    }
    saved = save_artifact(out_dir, booster=booster, features=tuned.features,
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
                feature_service: str = DEFAULT_FEATURE_SERVICE, n_trials: int = 20,
                seed: int = 0, weight_column: str | None = "weight",
                group_column: str | None = "session_id",
                defaults: Mapping[str, Any] | None = None,
                space: tuple[Param, ...] = SEARCH_SPACE,
                bounce_keep_rate: float = BOUNCE_KEEP_RATE,
                refit_on_validation: bool = True,
                created_at: dt.datetime | None = None) -> TrainResult:
    """Train the tuned, calibrated model on `df`; its artifact goes straight into `out_dir`."""
    tuned = fit_tuned(df, label, time_column=time_column, feature_service=feature_service,
                      n_trials=n_trials, seed=seed, weight_column=weight_column,
                      group_column=group_column, defaults=defaults, space=space,
                      bounce_keep_rate=bounce_keep_rate, refit_on_validation=refit_on_validation)
    return finish_model(tuned, df, out_dir, versioned=False, created_at=created_at)
