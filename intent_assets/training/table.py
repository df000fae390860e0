"""From a labelled table to LightGBM input: which columns are features, and how they read.

Every split is vectorized by `serving.model.Vectorizer`, the code the scorers run, so a value
means the same thing in training and in serving.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from intent_assets.training.tuning import DesignMatrix
from serving.model import Feature, Vectorizer

ID_COLUMN_NAMES = ("date", "event_timestamp")
# Categories seen in training, most frequent first; rarer ones are read as missing.
MAX_CATEGORIES = 200


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


def infer_features(train: pd.DataFrame, columns, defaults: Mapping[str, Any] | None = None,
                   keep=()) -> tuple[list[Feature], dict[str, str]]:
    """Feature specs from the train split, and the columns left out with the reason.

    A column in `keep` (a feature service's) is never left out: without values it is a float
    that is always missing, so the model's features stay the service's."""
    features, dropped = _infer_features(train, columns, defaults)
    kept = {name for name in dropped if name in set(keep)}
    if not kept:
        return features, dropped
    defaults = dict(defaults or {})
    by_name = {f.name: f for f in features}
    by_name.update({name: Feature(name, "float", _number_or_none(defaults.get(name)))
                    for name in kept})
    return ([by_name[name] for name in columns if name in by_name],
            {name: why for name, why in dropped.items() if name not in kept})


def _infer_features(train: pd.DataFrame, columns, defaults: Mapping[str, Any] | None = None
                    ) -> tuple[list[Feature], dict[str, str]]:
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


def label_values(df: pd.DataFrame, label: str) -> np.ndarray:
    if label not in df.columns:
        raise KeyError(f"label column {label!r} is not in the table")
    y = df[label]
    if y.isna().any():
        raise ValueError(f"label column {label!r} has nulls")
    values = pd.to_numeric(y.astype("int64") if y.dtype == bool else y, errors="coerce")
    if values.isna().any() or not values.isin([0, 1]).all():
        raise ValueError(f"label column {label!r} must hold only 0 and 1")
    return values.to_numpy(dtype=np.float64)


def row_weights(df: pd.DataFrame, weight_column: str | None) -> np.ndarray:
    if weight_column and weight_column in df.columns:
        w = df[weight_column].to_numpy(dtype=np.float64)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weight column {weight_column!r} must be finite and >= 0")
        return w
    return np.ones(len(df))


def design(vectorizer: Vectorizer, df: pd.DataFrame, label: str, weight_column: str | None,
           normalize: bool = False) -> DesignMatrix:
    """A split as a DesignMatrix; `normalize` scales weights to mean 1 (for fitting)."""
    w = row_weights(df, weight_column)
    if normalize and len(w):
        w = w / w.mean()
    return DesignMatrix(vectorizer.frame(df), label_values(df, label), w, vectorizer.feature_names,
                        vectorizer.categorical_indices)


def base_rates(df: pd.DataFrame, label: str, weight_column: str | None,
               group_column: str | None) -> dict[str, float]:
    """The label's rate over the table's rows (`scoring_moment`: one row per cut) and over its
    groups (`session`: each session once, its label being its rows'); the scoring API answers a
    request it knows no session for with them (docs/serving.md, "Fallbacks")."""
    y = df[label].astype("float64")
    w = df[weight_column].astype("float64") if weight_column and weight_column in df else None
    moment = float(np.average(y, weights=w)) if len(y) else float("nan")
    if group_column and group_column in df:
        session = float(y.groupby(df[group_column].to_numpy()).max().mean()) if len(y) \
            else float("nan")
    else:
        session = moment
    return {"scoring_moment": moment, "session": session}
