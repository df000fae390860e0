"""Calibration: how a model's raw margin (log-odds) becomes a purchase probability.

Stored in the artifact's `calibrator.json` as plain numbers, so scoring needs no fitting library:
`platt` is sigmoid(a * margin + b), `isotonic` interpolates stored breakpoints, `none` is
sigmoid(margin).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

CALIBRATION_METHODS = ("platt", "isotonic", "none")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp of a large negative only underflows to 0; splitting by sign avoids overflow warnings
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _sigmoid_one(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@dataclass(frozen=True)
class Calibrator:
    """Margin -> probability, as plain numbers so scoring needs no fitting library."""

    method: str = "none"
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, "
                             f"got {self.method!r}")
        if self.method == "isotonic":
            if len(self.x) < 1 or len(self.x) != len(self.y):
                raise ValueError("isotonic calibrator needs matching, non-empty x and y")
            if any(b < a for a, b in zip(self.x, self.x[1:])):
                raise ValueError("isotonic breakpoints x must be non-decreasing")

    def apply(self, margin) -> np.ndarray:
        """Calibrated probabilities for an array of raw margins."""
        m = np.asarray(margin, dtype=np.float64)
        if self.method == "platt":
            return _sigmoid(self.a * m + self.b)
        if self.method == "isotonic":
            return np.interp(m, self.x, self.y)
        return _sigmoid(m)

    def apply_one(self, margin: float) -> float:
        """The calibrated probability of one margin, without numpy call overhead."""
        if self.method == "platt":
            return _sigmoid_one(self.a * margin + self.b)
        if self.method == "isotonic":
            xs, ys = self.x, self.y
            if margin <= xs[0]:
                return ys[0]
            if margin >= xs[-1]:
                return ys[-1]
            i = bisect.bisect_right(xs, margin)
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return y0 if x1 == x0 else y0 + (y1 - y0) * (margin - x0) / (x1 - x0)
        return _sigmoid_one(margin)

    def to_json(self) -> dict:
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        if self.method == "isotonic":
            return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}
        return {"method": "none"}

    @classmethod
    def from_json(cls, data: Mapping) -> "Calibrator":
        method = data.get("method", "none")
        if method == "platt":
            return cls("platt", a=float(data["a"]), b=float(data["b"]))
        if method == "isotonic":
            return cls("isotonic", x=tuple(map(float, data["x"])), y=tuple(map(float, data["y"])))
        return cls(method)
