"""Training weights: drop some low-information negatives and make the rest count for them.

A bounce snapshot (a negative taken while the session has at most one product view and no cart
add) is the most common and least informative row: the model learns little from the thousandth
one. Keeping a seeded share of them and multiplying the kept ones' weight by 1 / share leaves
the expected weighted base rate, and so the loss the model minimises, unchanged while training
on fewer rows. Positives and every other negative are never dropped.

Which rows are kept depends only on the seed and the row's key (its snapshot id), so reruns and
backfills keep the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

BOUNCE_KEEP_RATE = 0.5
# A bounce: no more product views than this and no cart add so far.
BOUNCE_MAX_PRODUCT_VIEWS = 1
BOUNCE_COLUMNS = ("session_n_product_views", "session_n_cart_adds")


@dataclass(frozen=True)
class Downsampled:
    """The kept rows (weights compensated) and what happened, for metadata."""

    frame: pd.DataFrame
    info: dict


def bounce_mask(df: pd.DataFrame, label: str) -> pd.Series:
    """True for negative rows taken in a bounce: <= 1 product view and no cart add."""
    return ((df[label] == 0)
            & (df["session_n_product_views"] <= BOUNCE_MAX_PRODUCT_VIEWS)
            & (df["session_n_cart_adds"] == 0))


def keep_draw(df: pd.DataFrame, seed: int, key_column: str | None = "snapshot_id") -> np.ndarray:
    """A stable uniform number in [0, 1) per row, from the seed and the row's key.

    Without the key column, the row's own values are the key.
    """
    hash_key = f"{int(seed) % 10**16:016d}"
    if key_column and key_column in df.columns:
        hashed = pd.util.hash_pandas_object(df[key_column].astype(str), index=False,
                                            hash_key=hash_key)
    else:
        hashed = pd.util.hash_pandas_object(df, index=False, hash_key=hash_key)
    return (hashed.to_numpy(dtype=np.uint64) >> np.uint64(11)).astype(np.float64) / 2.0**53


def downsample_bounces(df: pd.DataFrame, label: str, weight_column: str = "weight",
                       keep_rate: float = BOUNCE_KEEP_RATE, seed: int = 0,
                       key_column: str | None = "snapshot_id") -> Downsampled:
    """Keep `keep_rate` of bounce negatives, with their weight multiplied by 1 / keep_rate.

    Tables without the session columns that define a bounce come back unchanged. The returned
    frame always has `weight_column` (all ones when the input had none).
    """
    if not 0 < keep_rate <= 1:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    out = df if weight_column in df.columns else df.assign(**{weight_column: 1.0})
    info = {"keep_rate": float(keep_rate), "seed": int(seed), "rows_in": int(len(df)),
            "rule": (f"label == 0 and session_n_product_views <= {BOUNCE_MAX_PRODUCT_VIEWS} "
                     "and session_n_cart_adds == 0")}
    if not all(c in df.columns for c in BOUNCE_COLUMNS) or keep_rate == 1:
        info.update(applied=False, bounces=0, dropped=0, rows_out=int(len(df)))
        return Downsampled(out, info)
    bounce = bounce_mask(out, label).to_numpy()
    keep = ~bounce | (keep_draw(out, seed, key_column) < keep_rate)
    kept = out[keep].copy()
    kept[weight_column] = kept[weight_column].astype(np.float64)
    kept.loc[bounce[keep], weight_column] *= 1.0 / keep_rate
    info.update(applied=True, bounces=int(bounce.sum()), dropped=int((~keep).sum()),
                rows_out=int(len(kept)))
    return Downsampled(kept, info)
