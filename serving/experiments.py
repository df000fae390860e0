"""Deterministic A/B assignment: the same user (or stable anonymous id) always gets the same variant.

A unit's bucket is the first 8 bytes of BLAKE2b(salt ":" unit_id) read as an integer and scaled to
[0, 1); the variant is the one whose cumulative split covers the bucket. A fresh salt per experiment
makes assignments independent across experiments; no state is stored, so the scoring API, the batch
readout and any other language can reproduce it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

_SCALE = float(2 ** 64)


@dataclass(frozen=True)
class ExperimentDesign:
    """An experiment's name, hashing salt, variants (the first is the control) and their splits."""

    name: str
    salt: str
    variants: tuple[str, ...] = ("control", "treatment")
    weights: tuple[float, ...] = (0.5, 0.5)

    def __post_init__(self) -> None:
        if len(self.variants) < 2:
            raise ValueError("an experiment needs at least two variants")
        if len(self.variants) != len(self.weights):
            raise ValueError("one weight per variant")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("variant names must be distinct")
        if any(w <= 0 for w in self.weights):
            raise ValueError("every split weight must be positive")

    @property
    def control(self) -> str:
        return self.variants[0]

    @property
    def shares(self) -> np.ndarray:
        """The splits normalised to sum to one."""
        w = np.asarray(self.weights, dtype=float)
        return w / w.sum()


def bucket(unit_id: str, salt: str) -> float:
    """The unit's uniform position in [0, 1) for this salt."""
    digest = hashlib.blake2b(f"{salt}:{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign(unit_id: str, design: ExperimentDesign) -> str:
    """The variant of one user id or stable anonymous id."""
    return assign_many([unit_id], design)[0]


def assign_many(unit_ids: Iterable[str], design: ExperimentDesign) -> list[str]:
    """The variants of many units, in order."""
    buckets = np.fromiter((bucket(str(u), design.salt) for u in unit_ids), dtype=float)
    return [design.variants[i] for i in variant_index(buckets, design.shares)]


def variant_index(buckets: np.ndarray, shares: Sequence[float]) -> np.ndarray:
    """Index of the variant whose cumulative share first exceeds each bucket."""
    edges = np.cumsum(shares)
    edges[-1] = 1.0  # rounding must never leave a bucket past the last edge
    return np.searchsorted(edges, buckets, side="right")
