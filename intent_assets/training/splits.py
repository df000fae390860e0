"""Train / validation / calibration / test splits that keep every session whole.

With a time column the splits follow time: sessions are ordered by their start (the earliest
time among their rows) and cut into consecutive blocks holding the requested shares of rows, so
every session of a later split starts after every session of an earlier one, and sessions that
start at the same instant land together. Without one, sessions are shuffled with a seed within
each label stratum (a session is positive if any of its rows is) and cut the same way, so every
split gets about the same positive rate.

Rows without a group column are their own groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SPLIT_NAMES = ("train", "validation", "calibration", "test")
DEFAULT_FRACTIONS = (0.6, 0.15, 0.1, 0.15)


@dataclass(frozen=True)
class Splits:
    """The four splits, the method that made them and the start-time boundaries if by time."""

    train: pd.DataFrame
    validation: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame
    method: str
    boundaries: dict

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [(name, getattr(self, name)) for name in SPLIT_NAMES]

    def summary(self, label: str | None = None, group_column: str | None = None,
                time_column: str | None = None) -> dict:
        """Rows, groups, positives and time range per split (for metadata)."""
        out: dict = {"method": self.method, "boundaries": self.boundaries}
        for name, df in self.items():
            info: dict = {"rows": int(len(df))}
            if group_column and group_column in df.columns:
                info["groups"] = int(df[group_column].nunique())
            if label and label in df.columns:
                info["positives"] = int((df[label] == 1).sum())
            if time_column and time_column in df.columns and len(df):
                info["time_min"] = str(df[time_column].min())
                info["time_max"] = str(df[time_column].max())
            out[name] = info
        return out


def _check_fractions(fractions) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (4,) or (f <= 0).any():
        raise ValueError(f"need four positive fractions, got {fractions}")
    return f / f.sum()


def _group_keys(df: pd.DataFrame, group_column: str | None) -> pd.Series:
    if group_column is None:
        return pd.Series(np.arange(len(df)), index=df.index)
    if group_column not in df.columns:
        raise KeyError(f"group column {group_column!r} is not in the table")
    if df[group_column].isna().any():
        raise ValueError(f"group column {group_column!r} has nulls")
    return df[group_column]


def _assign(group_rows: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Split index per group, groups in order: by the share of rows before each group."""
    before = (np.cumsum(group_rows) - group_rows) / group_rows.sum()
    edges = np.cumsum(fractions)[:-1]
    return np.searchsorted(edges, before, side="right")


def _build(df: pd.DataFrame, keys: pd.Series, group_split: pd.Series, method: str,
           boundaries: dict) -> Splits:
    row_split = keys.map(group_split).to_numpy()
    parts = {name: df[row_split == i] for i, name in enumerate(SPLIT_NAMES)}
    empty = [name for name, part in parts.items() if part.empty]
    if empty:
        raise ValueError(f"too few rows or sessions to split: {empty} would be empty")
    return Splits(**parts, method=method, boundaries=boundaries)


def time_splits(df: pd.DataFrame, time_column: str, fractions=DEFAULT_FRACTIONS,
                group_column: str | None = "session_id") -> Splits:
    """Split in time order on each group's start; no group in two splits, no start overlap."""
    f = _check_fractions(fractions)
    if time_column not in df.columns:
        raise KeyError(f"time column {time_column!r} is not in the table")
    times = df[time_column]
    if times.isna().any():
        raise ValueError(f"time column {time_column!r} has nulls")
    keys = _group_keys(df, group_column)
    starts = times.groupby(keys.to_numpy()).min()
    rows = keys.value_counts()
    groups = pd.DataFrame({"start": starts, "rows": rows.reindex(starts.index)})
    # ties on start broken by key, so reruns agree
    groups = groups.reset_index(names="key").sort_values(["start", "key"], kind="mergesort")
    split = _assign(groups["rows"].to_numpy(), f)
    # groups starting at the same instant go to the earliest split any of them got
    split = pd.Series(split).groupby(groups["start"].to_numpy()).transform("min").to_numpy()
    group_split = pd.Series(split, index=groups["key"].to_numpy())
    boundaries = {}
    for i, name in enumerate(SPLIT_NAMES):
        starts_in = groups["start"].to_numpy()[split == i]
        if len(starts_in):
            boundaries[name] = {"first_start": str(starts_in.min()),
                                "last_start": str(starts_in.max())}
    return _build(df, keys, group_split, "time", boundaries)


def stratified_splits(df: pd.DataFrame, label: str, group_column: str | None = None,
                      seed: int = 0, fractions=DEFAULT_FRACTIONS) -> Splits:
    """Split shuffled groups within each label stratum (a group is positive if any row is)."""
    f = _check_fractions(fractions)
    if label not in df.columns:
        raise KeyError(f"label column {label!r} is not in the table")
    keys = _group_keys(df, group_column)
    by_group = pd.DataFrame({"y": df[label].to_numpy(), "key": keys.to_numpy()}).groupby("key")
    groups = pd.DataFrame({"y": by_group["y"].max(), "rows": by_group.size()})
    groups = groups.sort_index()
    rng = np.random.default_rng(seed)
    assigned = []
    for _, stratum in groups.groupby("y", sort=True):
        shuffled = stratum.iloc[rng.permutation(len(stratum))]
        assigned.append(pd.Series(_assign(shuffled["rows"].to_numpy(), f),
                                  index=shuffled.index))
    group_split = pd.concat(assigned)
    return _build(df, keys, group_split, "stratified", {"seed": int(seed)})
