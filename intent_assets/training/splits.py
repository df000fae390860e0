"""Train / validation / calibration / test splits that keep every session whole.

With a time column the splits follow time: sessions are ordered by their start (the earliest
time among their rows) and cut into consecutive blocks holding the requested shares of rows, so
every session of a later split starts after every session of an earlier one, and sessions that
start at the same instant land together. Without one, sessions are shuffled with a seed within
each label stratum (a session is positive if any of its rows is) and cut the same way, so every
split gets about the same positive rate.

Rows without a group column are their own groups.

`time_folds` and `stratified_folds` cut the rows left after the test split into cross-validation
folds by the same rules: with time, forward chaining (each validation block later than every row
its model is trained on); without, shuffled groups per label stratum. Groups stay whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SPLIT_NAMES = ("train", "validation", "calibration", "test")
DEFAULT_FRACTIONS = (0.6, 0.15, 0.1, 0.15)
CV_FOLDS = 5
# Time folds: the earliest half is only ever trained on (a model needs a past to learn from);
# the later half is cut into CV_FOLDS blocks, each validated by a model of everything before it.
TIME_FIRST_TRAIN_SHARE = 0.5


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
            out[name] = part_summary(df, label, group_column, time_column)
        return out


def part_summary(df: pd.DataFrame, label: str | None = None, group_column: str | None = None,
                 time_column: str | None = None) -> dict:
    """Rows, groups, positives and time range of one part of a table."""
    info: dict = {"rows": int(len(df))}
    if group_column and group_column in df.columns:
        info["groups"] = int(df[group_column].nunique())
    if label and label in df.columns:
        info["positives"] = int((df[label] == 1).sum())
    if time_column and time_column in df.columns and len(df):
        info["time_min"] = str(df[time_column].min())
        info["time_max"] = str(df[time_column].max())
    return info


@dataclass(frozen=True)
class Folds:
    """A fold number per row (-1: trained on by every fold, never validated) and the method.

    Fold k validates on its own rows; "time" folds train on every row before them (fold < k),
    "stratified" ones on every other fold.
    """

    fold: np.ndarray
    method: str
    k: int

    def train_mask(self, k: int) -> np.ndarray:
        return self.fold < k if self.method == "time" else (self.fold != k)

    def valid_mask(self, k: int) -> np.ndarray:
        return self.fold == k

    def summary(self) -> dict:
        counts = {int(k): int((self.fold == k).sum()) for k in range(-1, self.k)}
        return {"method": self.method, "folds": self.k,
                "trained_on_only": counts.pop(-1),
                "validation_rows": [counts[k] for k in range(self.k)],
                "train_rows": [int(self.train_mask(k).sum()) for k in range(self.k)]}


def _check_fractions(fractions, n: int = 4) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (n,) or (f <= 0).any():
        raise ValueError(f"need {n} positive fractions, got {fractions}")
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


def _groups_in_time(df: pd.DataFrame, time_column: str, keys: pd.Series) -> pd.DataFrame:
    """One row per group (key, start, rows), ordered by start; ties broken by key."""
    if time_column not in df.columns:
        raise KeyError(f"time column {time_column!r} is not in the table")
    times = df[time_column]
    if times.isna().any():
        raise ValueError(f"time column {time_column!r} has nulls")
    starts = times.groupby(keys.to_numpy()).min()
    rows = keys.value_counts()
    groups = pd.DataFrame({"start": starts, "rows": rows.reindex(starts.index)})
    # ties on start broken by key, so reruns agree
    return groups.reset_index(names="key").sort_values(["start", "key"], kind="mergesort")


def _assign_in_time(groups: pd.DataFrame, f: np.ndarray) -> np.ndarray:
    """Block per time-ordered group; groups starting at the same instant share the earliest."""
    split = _assign(groups["rows"].to_numpy(), f)
    return pd.Series(split).groupby(groups["start"].to_numpy()).transform("min").to_numpy()


def time_splits(df: pd.DataFrame, time_column: str, fractions=DEFAULT_FRACTIONS,
                group_column: str | None = "session_id") -> Splits:
    """Split in time order on each group's start; no group in two splits, no start overlap."""
    f = _check_fractions(fractions)
    keys = _group_keys(df, group_column)
    groups = _groups_in_time(df, time_column, keys)
    split = _assign_in_time(groups, f)
    group_split = pd.Series(split, index=groups["key"].to_numpy())
    boundaries = {}
    for i, name in enumerate(SPLIT_NAMES):
        starts_in = groups["start"].to_numpy()[split == i]
        if len(starts_in):
            boundaries[name] = {"first_start": str(starts_in.min()),
                                "last_start": str(starts_in.max())}
    return _build(df, keys, group_split, "time", boundaries)


def _shuffled_in_strata(df: pd.DataFrame, label: str, keys: pd.Series, f: np.ndarray,
                        seed: int) -> pd.Series:
    """Block per group: groups shuffled with `seed` within each label stratum, then cut."""
    if label not in df.columns:
        raise KeyError(f"label column {label!r} is not in the table")
    by_group = pd.DataFrame({"y": df[label].to_numpy(), "key": keys.to_numpy()}).groupby("key")
    groups = pd.DataFrame({"y": by_group["y"].max(), "rows": by_group.size()})
    groups = groups.sort_index()
    rng = np.random.default_rng(seed)
    assigned = []
    for _, stratum in groups.groupby("y", sort=True):
        shuffled = stratum.iloc[rng.permutation(len(stratum))]
        assigned.append(pd.Series(_assign(shuffled["rows"].to_numpy(), f),
                                  index=shuffled.index))
    return pd.concat(assigned)


def stratified_splits(df: pd.DataFrame, label: str, group_column: str | None = None,
                      seed: int = 0, fractions=DEFAULT_FRACTIONS) -> Splits:
    """Split shuffled groups within each label stratum (a group is positive if any row is)."""
    f = _check_fractions(fractions)
    keys = _group_keys(df, group_column)
    group_split = _shuffled_in_strata(df, label, keys, f, seed)
    return _build(df, keys, group_split, "stratified", {"seed": int(seed)})


def _folds(df: pd.DataFrame, keys: pd.Series, group_block: pd.Series, offset: int,
           method: str, k: int) -> Folds:
    fold = keys.map(group_block).to_numpy().astype(np.int64) - offset
    empty = [i for i in range(k) if not (fold == i).any()]
    if empty:
        raise ValueError(f"too few rows or sessions for {k} folds: folds {empty} would be empty")
    return Folds(fold, method, k)


def time_folds(df: pd.DataFrame, time_column: str, group_column: str | None = "session_id",
               folds: int = CV_FOLDS, first_train_share: float = TIME_FIRST_TRAIN_SHARE
               ) -> Folds:
    """Forward-chaining folds in time order of group starts; the first share is never validated."""
    if not 0 < first_train_share < 1:
        raise ValueError(f"first_train_share must be in (0, 1), got {first_train_share}")
    f = _check_fractions([first_train_share] + [(1 - first_train_share) / folds] * folds,
                         folds + 1)
    keys = _group_keys(df, group_column)
    groups = _groups_in_time(df, time_column, keys)
    block = pd.Series(_assign_in_time(groups, f), index=groups["key"].to_numpy())
    return _folds(df, keys, block, 1, "time", folds)


def stratified_folds(df: pd.DataFrame, label: str, group_column: str | None = None,
                     folds: int = CV_FOLDS, seed: int = 0) -> Folds:
    """K folds of shuffled groups per label stratum: every row validated exactly once."""
    f = _check_fractions([1.0] * folds, folds)
    keys = _group_keys(df, group_column)
    block = _shuffled_in_strata(df, label, keys, f, seed)
    return _folds(df, keys, block, 0, "stratified", folds)
