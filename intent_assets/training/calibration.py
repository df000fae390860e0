"""Turning raw margins into probabilities: Platt or isotonic, fitted on the calibration split
(or, on small tables, on the out-of-fold margins of `crossval`).

Platt is a weighted logistic regression of the label on the raw margin (two numbers). Isotonic
is a weighted monotone step fit, stored as breakpoints for np.interp; it is only considered with
at least ISOTONIC_MIN_ROWS rows and ISOTONIC_MIN_POSITIVES positives, below which it overfits.

The choice is by weighted log loss measured out of fold (K folds by session on the calibration
split): scored on the rows it was fitted to, isotonic would always win. The chosen method is then
refitted on the whole calibration split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from intent_assets.reports.metrics import weighted_log_loss as log_loss
from serving.model import Calibrator

ISOTONIC_MIN_ROWS = 1_000
ISOTONIC_MIN_POSITIVES = 50
CV_FOLDS = 5
# Isotonic probabilities are kept this far from 0 and 1: a step at exactly 0 would make one
# surprising positive cost an infinite log loss.
PROB_FLOOR = 1e-6


def fit_platt(margin, y, w=None, max_iter: int = 100, tol: float = 1e-10) -> Calibrator:
    """Weighted maximum-likelihood sigmoid(a * margin + b), by damped Newton steps."""
    m = np.asarray(margin, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(m) if w is None else np.asarray(w, dtype=np.float64)
    w = w / w.sum()
    A = np.column_stack([m, np.ones_like(m)])
    theta = np.array([1.0, 0.0])

    def nll(t: np.ndarray) -> float:
        z = A @ t
        # log(1 + e^z) - y z, stable for large |z|
        return float(np.sum(w * (np.logaddexp(0.0, z) - y * z)))

    current = nll(theta)
    for _ in range(max_iter):
        z = A @ theta
        p = 1.0 / (1.0 + np.exp(-z))
        grad = A.T @ (w * (p - y))
        hess = (A * (w * p * (1 - p))[:, None]).T @ A + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-8:
            candidate = theta - scale * step
            value = nll(candidate)
            if value <= current:
                break
            scale /= 2
        else:
            break
        improvement = current - value
        theta, current = candidate, value
        if improvement < tol:
            break
    return Calibrator("platt", a=float(theta[0]), b=float(theta[1]))


def fit_isotonic(margin, y, w=None) -> Calibrator:
    """Weighted isotonic regression of the label on the margin, as np.interp breakpoints."""
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=PROB_FLOOR, y_max=1 - PROB_FLOOR, increasing=True,
                               out_of_bounds="clip")
    model.fit(np.asarray(margin, dtype=np.float64), np.asarray(y, dtype=np.float64),
              sample_weight=None if w is None else np.asarray(w, dtype=np.float64))
    return Calibrator("isotonic", x=tuple(map(float, model.X_thresholds_)),
                      y=tuple(map(float, model.y_thresholds_)))


def isotonic_allowed(y) -> bool:
    """Enough rows and positives for isotonic not to overfit."""
    y = np.asarray(y)
    return len(y) >= ISOTONIC_MIN_ROWS and int((y == 1).sum()) >= ISOTONIC_MIN_POSITIVES


_FITTERS = {"platt": fit_platt, "isotonic": fit_isotonic}


@dataclass(frozen=True)
class CalibrationResult:
    """The chosen calibrator, and each candidate's out-of-fold weighted log loss."""

    calibrator: Calibrator
    log_losses: dict[str, float] = field(default_factory=dict)
    isotonic_allowed: bool = False

    @property
    def method(self) -> str:
        return self.calibrator.method

    def to_json(self) -> dict:
        return {"method": self.method, "log_losses": self.log_losses,
                "isotonic_allowed": self.isotonic_allowed, "folds": CV_FOLDS,
                "isotonic_min_rows": ISOTONIC_MIN_ROWS,
                "isotonic_min_positives": ISOTONIC_MIN_POSITIVES}


def folds_of(n: int, groups=None, folds: int = CV_FOLDS) -> np.ndarray:
    """A fold number per row, the same for every row of a group (stable hash of the group)."""
    keys = np.arange(n) if groups is None else np.asarray(groups)
    hashed = pd.util.hash_array(keys.astype(str).astype(object))
    return (hashed % np.uint64(folds)).astype(np.int64)


def out_of_fold_log_loss(method: str, margin, y, w=None, groups=None,
                         folds: int = CV_FOLDS) -> float:
    """Weighted log loss of `method` when each fold is calibrated by a fit on the others."""
    m = np.asarray(margin, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(m) if w is None else np.asarray(w, dtype=np.float64)
    fold = folds_of(len(m), groups, folds)
    p = np.empty_like(m)
    for k in range(folds):
        held = fold == k
        if not held.any():
            continue
        rest = ~held
        if not ((y[rest] == 1).any() and (y[rest] == 0).any()):
            raise ValueError("calibration split too small: a fold left one class only")
        p[held] = _FITTERS[method](m[rest], y[rest], w[rest]).apply(m[held])
    return log_loss(y, p, w)


def calibrate(margin, y, w=None, groups=None, folds: int = CV_FOLDS) -> CalibrationResult:
    """Fit Platt (and isotonic if allowed), keep the lower out-of-fold log loss, refit on all."""
    m = np.asarray(margin, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not ((y == 1).any() and (y == 0).any()):
        raise ValueError("the calibration split needs both positives and negatives")
    allowed = isotonic_allowed(y)
    methods = ["platt"] + (["isotonic"] if allowed else [])
    losses = {"none": log_loss(y, Calibrator("none").apply(m), w)}
    for method in methods:
        losses[method] = out_of_fold_log_loss(method, m, y, w, groups, folds)
    best = min(methods, key=lambda name: losses[name])
    return CalibrationResult(_FITTERS[best](m, y, w), losses, allowed)
