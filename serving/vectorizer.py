"""Rows -> model input: the one place a row becomes the model's float vector, in training and serving.

An absent column, None or NaN takes the feature's default (a None default means "missing", which
LightGBM routes the way it learned for missing values); a categorical value not in the training
list is missing. Training builds its matrix with the same `Vectorizer`, so an input means the same
thing in both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

FEATURE_KINDS = ("int", "float", "categorical")

# Up to this many records are vectorized row by row rather than through a DataFrame, whose
# fixed cost of building and converting the columns outweighs a per-row loop below it.
_RECORDS_WITHOUT_PANDAS = 1_000
_NAN = float("nan")

@dataclass(frozen=True)
class Feature:
    """One model input: name, kind, default for an absent value, and categories if categorical."""

    name: str
    kind: str
    default: Any = None
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature {self.name!r}: kind must be one of {FEATURE_KINDS}, "
                             f"got {self.kind!r}")
        if self.kind != "categorical" and self.categories:
            raise ValueError(f"feature {self.name!r}: only categoricals have categories")

    def fill_value(self) -> float:
        """The model-input number an absent value becomes (NaN: missing)."""
        if self.default is None:
            return _NAN
        if self.kind == "categorical":
            try:
                return float(self.categories.index(str(self.default)))
            except ValueError:
                return _NAN
        return float(self.default)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind,
                               "default": _json_value(self.default)}
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_json(cls, data: Mapping) -> "Feature":
        return cls(name=data["name"], kind=data["kind"], default=data.get("default"),
                   categories=tuple(data.get("categories") or ()))


def _json_value(value: Any) -> Any:
    """A default as JSON has it: NaN and None are both null (missing)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return str(value)


class Vectorizer:
    """Turns rows into the model's float matrix, the same way in training and in serving."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self.features = tuple(features)
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        self.feature_names: tuple[str, ...] = tuple(names)
        self._fills = np.array([f.fill_value() for f in self.features], dtype=np.float64)
        self._codes: tuple[dict[str, float] | None, ...] = tuple(
            {c: float(i) for i, c in enumerate(f.categories)} if f.kind == "categorical" else None
            for f in self.features)
        self._plan = tuple(zip(self.feature_names, self._fills.tolist(), self._codes))

    @property
    def categorical_indices(self) -> tuple[int, ...]:
        return tuple(i for i, f in enumerate(self.features) if f.kind == "categorical")

    def __call__(self, rows) -> np.ndarray:
        """Rows (DataFrame, list of dicts or one dict) as a float matrix, features in order."""
        if isinstance(rows, pd.DataFrame):
            return self.frame(rows)
        if isinstance(rows, Mapping):
            return self.one(rows)[None, :]
        rows = list(rows)
        if not rows:
            return np.empty((0, len(self.features)))
        if len(rows) <= _RECORDS_WITHOUT_PANDAS:
            return np.vstack([self.one(row) for row in rows])
        return self.frame(pd.DataFrame.from_records(rows))

    def one(self, row: Mapping) -> np.ndarray:
        """One row (a mapping of feature name to value) as a float vector, without pandas."""
        x = []
        append = x.append
        get = row.get
        for name, fill, codes in self._plan:
            v = get(name)
            if v is None:
                append(fill)
            elif codes is None:
                try:
                    v = float(v)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"feature {name!r} must be a number, got {v!r}") from exc
                append(fill if v != v else v)
            elif v.__class__ is str:
                append(codes.get(v, _NAN))
            elif isinstance(v, float) and v != v:
                append(fill)
            else:
                append(codes.get(str(v), _NAN))
        return np.array(x, dtype=np.float64)

    def frame(self, df: pd.DataFrame) -> np.ndarray:
        """A DataFrame as a float matrix; columns the model does not use are ignored."""
        X = np.empty((len(df), len(self.features)), dtype=np.float64)
        for j, (feature, fill, codes) in enumerate(zip(self.features, self._fills, self._codes)):
            if feature.name not in df.columns:
                X[:, j] = fill
                continue
            col = df[feature.name]
            missing = col.isna().to_numpy()
            if codes is None:
                try:
                    values = pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64,
                                                                        na_value=np.nan)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"feature {feature.name!r} must be numeric: {exc}") from exc
            else:
                text = col.astype(object).where(~missing, None)
                if not (pd.api.types.is_string_dtype(col) or col.dtype == object):
                    text = text.map(lambda v: None if v is None else str(v))
                found = pd.Index(feature.categories, dtype=object).get_indexer(
                    text.to_numpy(dtype=object))
                values = np.where(found >= 0, found, np.nan).astype(np.float64)
            values[missing] = fill
            X[:, j] = values
        return X

    def decode(self, j: int, value: float) -> Any:
        """A model-input number as a person reads it: the category, the number, or None."""
        if value != value:
            return None
        feature = self.features[j]
        if feature.kind == "categorical":
            return feature.categories[int(value)]
        if feature.kind == "int" and float(value).is_integer():
            return int(value)
        return float(value)

