"""The two baselines a model must be compared with: the shop's old rules and logistic regression.

Both produce probabilities, so they are evaluated with exactly the metrics of the model.

The rules control is the policy the shop ran before: hand-set bands on funnel stage, cart and
product views. Only the band → probability map is fitted (each band's observed rate on the
training split), which gives the rules their best possible calibration without changing what
they rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from serving.policy import MANY_PRODUCT_VIEWS, REPEAT_PRODUCT_VIEWS, RULE_BANDS as BANDS, RulesPolicy

# Pulls a band's rate toward the base rate by this much weight (one session), so a band never
# seen in training, or seen only without buyers, still gets a usable probability.
PRIOR_WEIGHT = 1.0
# One-hot columns per string feature at most; rarer values share one column (ids stay bounded).
MAX_CATEGORIES = 50


def _weights(df: pd.DataFrame, weight_column: str | None) -> np.ndarray:
    if weight_column is None:
        return np.ones(len(df))
    w = df[weight_column].to_numpy(dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weight column {weight_column!r} must be finite and non-negative")
    return w


def _labels(df: pd.DataFrame, label: str) -> np.ndarray:
    y = df[label].to_numpy()
    if pd.isna(y).any() or not np.isin(y.astype(np.float64), (0.0, 1.0)).all():
        raise ValueError(f"label column {label!r} must be 0/1 without nulls")
    return y.astype(np.int64)


@dataclass(frozen=True)
class RulesBaseline:
    """The pre-model policy: a hand-set band per row, scored by the band's training rate."""

    cart_value_threshold: float
    band_rates: dict[str, float]
    band_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    base_rate: float = 0.0

    def bands(self, df: pd.DataFrame) -> np.ndarray:
        """The band of every row."""
        return RulesPolicy(cart_value=self.cart_value_threshold).bands(df)

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """The purchase probability of every row: its band's observed training rate."""
        return pd.Series(self.bands(df)).map(self.band_rates).to_numpy(dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """The rules and their fitted rates, JSON-friendly."""
        return {
            "kind": "rules",
            "cart_value_threshold": self.cart_value_threshold,
            "repeat_product_views": REPEAT_PRODUCT_VIEWS,
            "many_product_views": MANY_PRODUCT_VIEWS,
            "bands": [{"band": b, "rate": self.band_rates[b], **self.band_stats.get(b, {})}
                      for b in BANDS],
            "base_rate": self.base_rate,
        }


def fit_rules_baseline(train_df: pd.DataFrame, label: str = "label",
                       weight_column: str | None = None,
                       rules: RulesPolicy = RulesPolicy()) -> RulesBaseline:
    """Fit the band rates of `rules` (the A/B control's policy) on the training split."""
    if len(train_df) == 0:
        raise ValueError("no training rows")
    y = _labels(train_df, label)
    w = _weights(train_df, weight_column)
    cart_value_threshold = rules.cart_value
    bands = rules.bands(train_df)
    base = float(np.average(y, weights=w)) if w.sum() > 0 else float(y.mean())
    rates, stats = {}, {}
    for b in BANDS:
        m = bands == b
        bw, bpos = float(w[m].sum()), float((w * y)[m].sum())
        rates[b] = (bpos + PRIOR_WEIGHT * base) / (bw + PRIOR_WEIGHT)
        stats[b] = {"rows": int(m.sum()), "weight": bw, "positive_rows": int(y[m].sum())}
    return RulesBaseline(cart_value_threshold=float(cart_value_threshold), band_rates=rates,
                         band_stats=stats, base_rate=base)


def split_feature_types(df: pd.DataFrame, feature_columns: list[str]) -> tuple[list[str], list[str]]:
    """(numeric, categorical) feature columns: strings and categories are categorical."""
    missing = [c for c in feature_columns if c not in df.columns]
    if missing:
        raise ValueError(f"feature columns not in the table: {missing}")
    categorical = [c for c in feature_columns
                   if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))]
    numeric = [c for c in feature_columns if c not in categorical]
    return numeric, categorical


def _prepare(df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Numeric columns as floats, categorical ones as strings with missing values kept missing."""
    out = pd.DataFrame(index=df.index)
    for c in numeric:
        out[c] = pd.to_numeric(df[c], errors="coerce").astype(np.float64)
    for c in categorical:
        out[c] = df[c].astype(object).map(lambda v: np.nan if pd.isna(v) else str(v))
    return out


@dataclass
class LogisticBaseline:
    """Logistic regression on standardized numerics and one-hot strings, with its pipeline."""

    pipeline: Pipeline
    numeric: list[str]
    categorical: list[str]
    label: str
    n_train: int

    @property
    def feature_columns(self) -> list[str]:
        return self.numeric + self.categorical

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """The purchase probability of every row."""
        x = _prepare(df, self.numeric, self.categorical)
        return self.pipeline.predict_proba(x)[:, 1]

    def to_dict(self) -> dict[str, Any]:
        """Inputs, regularization and the largest coefficients, JSON-friendly."""
        model: LogisticRegression = self.pipeline[-1]
        names = self.pipeline[0].get_feature_names_out()
        coef = model.coef_.ravel()
        top = np.argsort(-np.abs(coef))[:20]
        return {
            "kind": "logistic", "label": self.label, "n_train": self.n_train,
            "numeric": self.numeric, "categorical": self.categorical, "C": float(model.C),
            "class_weight": model.class_weight, "intercept": float(model.intercept_[0]),
            "top_coefficients": [{"feature": str(names[i]), "coef": float(coef[i])} for i in top],
        }


def fit_logistic_baseline(train_df: pd.DataFrame, label: str, feature_columns: list[str],
                          weight_column: str | None = None, class_weight: str | dict | None = None,
                          C: float = 1.0, max_iter: int = 1000) -> LogisticBaseline:
    """Fit logistic regression: median-impute and standardize numerics, one-hot strings.

    Sample weights (`weight_column`) keep each session counting once. No class weighting by
    default, so the probabilities stay on the true base rate and its calibration is comparable
    with the model's; pass `class_weight="balanced"` to trade that for minority-class focus.
    """
    if len(train_df) == 0:
        raise ValueError("no training rows")
    y = _labels(train_df, label)
    if len(np.unique(y)) < 2:
        raise ValueError("logistic regression needs both classes in the training split")
    w = _weights(train_df, weight_column)
    numeric, categorical = split_feature_types(train_df, list(feature_columns))
    transformers = []
    if numeric:
        # keep_empty_features: a column null throughout training keeps its slot (imputed as 0)
        transformers.append(("numeric", make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()), numeric))
    if categorical:
        transformers.append(("categorical", make_pipeline(
            SimpleImputer(strategy="constant", fill_value="(missing)", keep_empty_features=True),
            OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=MAX_CATEGORIES,
                          sparse_output=False)), categorical))
    if not transformers:
        raise ValueError("no feature columns")
    pipeline = Pipeline([
        ("features", ColumnTransformer(transformers, remainder="drop")),
        ("logistic", LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter)),
    ])
    pipeline.fit(_prepare(train_df, numeric, categorical), y, logistic__sample_weight=w)
    return LogisticBaseline(pipeline=pipeline, numeric=numeric, categorical=categorical,
                            label=label, n_train=int(len(train_df)))
