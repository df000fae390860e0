"""Population stability index (PSI): how far a distribution has moved from its reference.

PSI = sum over bins of (c_i - r_i) * ln(c_i / r_i), where r_i and c_i are the reference's and the
current data's shares in bin i. Bins are the reference's deciles for continuous values, or the
values themselves for a feature with few distinct values (counts, flags, categories). The usual
reading, used here: below 0.1 stable, 0.1 to 0.2 a moderate shift (warn), above 0.2 a major
shift (alert).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

WARN = 0.1
ALERT = 0.2
N_BINS = 10
# An empty bin would make ln(c / r) infinite; a share this small stands in for zero.
EPSILON = 1e-4


def psi_status(value: float) -> str:
    """"ok", "warn" (>= 0.1) or "alert" (>= 0.2)."""
    if not np.isfinite(value):
        return "alert"
    return "alert" if value >= ALERT else "warn" if value >= WARN else "ok"


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    shares = counts / total if total else np.zeros_like(counts, dtype=float)
    return np.clip(shares, EPSILON, None)


def psi(reference, current, n_bins: int = N_BINS) -> float:
    """PSI of `current` against `reference` (1-d values; nulls form their own bin)."""
    ref = pd.Series(reference)
    cur = pd.Series(current)
    if ref.dropna().empty or cur.empty:
        return float("nan")
    if not pd.api.types.is_numeric_dtype(ref) or ref.nunique(dropna=True) <= n_bins:
        categories = pd.Index(ref.dropna().unique()).union(cur.dropna().unique())
        r = ref.value_counts().reindex(categories, fill_value=0).to_numpy(float)
        c = cur.value_counts().reindex(categories, fill_value=0).to_numpy(float)
    else:
        ref_values = ref.dropna().to_numpy(float)
        edges = np.unique(np.quantile(ref_values, np.linspace(0, 1, n_bins + 1)[1:-1]))
        r = np.bincount(np.searchsorted(edges, ref_values, side="right"), minlength=edges.size + 1)
        c = np.bincount(np.searchsorted(edges, cur.dropna().to_numpy(float), side="right"),
                        minlength=edges.size + 1)
    r = np.append(r, ref.isna().sum()).astype(float)
    c = np.append(c, cur.isna().sum()).astype(float)
    rs, cs = _shares(r), _shares(c)
    return float(np.sum((cs - rs) * np.log(cs / rs)))


# Features whose distribution over one day, or part of one, differs from the training set's by
# construction: a day's traffic has one weekday, a morning only its hours. Their PSI is shown
# with status "calendar" and judged by no check: it says when the traffic came, not what it is.
CALENDAR_FEATURES = frozenset({"session_hour", "session_weekday"})


def feature_psi(reference: pd.DataFrame, current: pd.DataFrame, features: Iterable[str],
                n_bins: int = N_BINS) -> pd.DataFrame:
    """PSI and status per feature present in both frames, worst first."""
    rows = [{"feature": f, "psi": psi(reference[f], current[f], n_bins)}
            for f in features if f in reference.columns and f in current.columns]
    table = pd.DataFrame(rows, columns=["feature", "psi"])
    table["status"] = [("calendar" if f in CALENDAR_FEATURES else psi_status(p))
                       for f, p in zip(table["feature"], table["psi"])]
    return table.sort_values("psi", ascending=False, na_position="first").reset_index(drop=True)


def max_judged_psi(table: pd.DataFrame) -> float:
    """The largest PSI among the features a check judges (calendar features left out)."""
    judged = table.loc[table["status"] != "calendar", "psi"] if len(table) else table
    return float(judged.max()) if len(judged) and pd.notna(judged.max()) else 0.0


def worst_status(statuses: Iterable[str]) -> str:
    order = {"ok": 0, "warn": 1, "alert": 2}
    return max((s for s in statuses if s in order), key=order.__getitem__, default="ok")
