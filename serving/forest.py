"""Random forest and small neural network scored in numpy, from arrays (no pickles, no sklearn).

The training side fits scikit-learn's `RandomForestClassifier` and `MLPClassifier` and exports
their numbers (`from_sklearn`); the inference image then needs numpy only for these families.

Reasons:
- forest: path attributions (Saabas), as LightGBM's `PathExplainer`: every split on a row's path
  credits its feature with the change of the node's P(1), averaged over the trees. They sum to
  the forest's P(1) minus the root's; scaled by (logit p - logit p0) / (p - p0) they sum exactly
  to the raw margin minus the expected value, logit(p0).
- mlp: occlusion: a feature's contribution is the margin minus the margin with that feature set
  to its training mean (and not missing). The expected value is the margin of the all-means row.
  Contributions need not sum to the margin (the network is not additive).
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np

_EPS = 1e-6


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """Arrays as the bytes of an uncompressed .npz (loaded with allow_pickle=False)."""
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def _npz(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


class ForestModel:
    """A random forest's trees as flat arrays; all trees walked at once, level by level."""

    family = "random_forest"
    explanation_method = "path attributions (Saabas), rescaled to the logit"
    FILE = "forest.npz"

    def __init__(self, left, right, feature, threshold, missing_left, value, roots,
                 n_features: int) -> None:
        self.left = np.asarray(left, dtype=np.int64)
        self.right = np.asarray(right, dtype=np.int64)
        self.feature = np.asarray(feature, dtype=np.int64)
        self.threshold = np.asarray(threshold, dtype=np.float64)
        self.missing_left = np.asarray(missing_left, dtype=bool)
        self.value = np.asarray(value, dtype=np.float64)
        self.roots = np.asarray(roots, dtype=np.int64)
        self.n_features = int(n_features)
        self.p0 = float(self.value[self.roots].mean())

    @classmethod
    def from_sklearn(cls, forest) -> "ForestModel":
        parts = {k: [] for k in ("left", "right", "feature", "threshold", "missing_left", "value")}
        roots, offset = [], 0
        for estimator in forest.estimators_:
            tree = estimator.tree_
            leaf = tree.children_left < 0
            parts["left"].append(np.where(leaf, -1, tree.children_left + offset))
            parts["right"].append(np.where(leaf, -1, tree.children_right + offset))
            parts["feature"].append(np.where(leaf, 0, tree.feature))
            parts["threshold"].append(tree.threshold)
            missing = getattr(tree, "missing_go_to_left", None)
            parts["missing_left"].append(np.zeros(tree.node_count, dtype=bool) if missing is None
                                         else missing.astype(bool))
            counts = tree.value[:, 0, :]
            parts["value"].append(counts[:, 1] / counts.sum(axis=1))
            roots.append(offset)
            offset += tree.node_count
        return cls(*(np.concatenate(parts[k]) for k in parts), roots, forest.n_features_in_)

    def _walk(self, X: np.ndarray, contributions: bool):
        X = np.asarray(X, dtype=np.float64)
        n, t = len(X), len(self.roots)
        node = np.broadcast_to(self.roots, (n, t)).copy()
        rows = np.repeat(np.arange(n), t).reshape(n, t)
        contrib = np.zeros((n, self.n_features)) if contributions else None
        while True:
            active = self.left[node] >= 0
            if not active.any():
                break
            at, r = node[active], rows[active]
            f = self.feature[at]
            x = X[r, f]
            go_left = np.where(np.isnan(x), self.missing_left[at], x <= self.threshold[at])
            child = np.where(go_left, self.left[at], self.right[at])
            if contributions:
                np.add.at(contrib, (r, f), self.value[child] - self.value[at])
            node[active] = child
        p = self.value[node].mean(axis=1)
        return p, (contrib / t if contributions else None)

    def raw(self, X: np.ndarray) -> np.ndarray:
        return _logit(self._walk(X, False)[0])

    def shap(self, X: np.ndarray) -> np.ndarray:
        p, contrib = self._walk(X, True)
        base = float(_logit(np.array([self.p0]))[0])
        margin = _logit(p)
        dp = p - self.p0
        slope = np.where(np.abs(dp) > 1e-9, (margin - base) / np.where(dp == 0, 1, dp),
                         1.0 / max(self.p0 * (1 - self.p0), _EPS))
        return np.hstack([contrib * slope[:, None], np.full((len(p), 1), base)])

    def blobs(self, prefix: str = "") -> dict[str, bytes]:
        return {prefix + self.FILE: npz_bytes(
            left=self.left, right=self.right, feature=self.feature, threshold=self.threshold,
            missing_left=self.missing_left, value=self.value, roots=self.roots,
            n_features=np.array(self.n_features))}

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes], prefix: str = "") -> "ForestModel":
        a = _npz(blobs[prefix + cls.FILE])
        return cls(a["left"], a["right"], a["feature"], a["threshold"], a["missing_left"],
                   a["value"], a["roots"], int(a["n_features"]))


class MLPModel:
    """A ReLU network with a logistic output, after the same input preparation as in training:
    missing values filled with the training mean (plus a missing flag where training had any),
    then standardized."""

    family = "mlp"
    explanation_method = "occlusion (feature set to its training mean)"
    FILE = "mlp.npz"

    def __init__(self, fill, flagged, mean, scale, coefs, intercepts) -> None:
        self.fill = np.asarray(fill, dtype=np.float64)
        self.flagged = np.asarray(flagged, dtype=np.int64)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.coefs = [np.asarray(c, dtype=np.float64) for c in coefs]
        self.intercepts = [np.asarray(b, dtype=np.float64) for b in intercepts]

    @classmethod
    def preparation(cls, X: np.ndarray) -> dict[str, np.ndarray]:
        """Fill, flag and scale parameters learned from a training matrix."""
        X = np.asarray(X, dtype=np.float64)
        nan = np.isnan(X)
        fill = np.where(nan.all(axis=0), 0.0, np.nanmean(np.where(nan.all(axis=0), 0.0, X),
                                                          axis=0))
        flagged = np.flatnonzero(nan.any(axis=0))
        Z = np.hstack([np.where(nan, fill, X), nan[:, flagged].astype(np.float64)])
        scale = Z.std(axis=0)
        return {"fill": fill, "flagged": flagged, "mean": Z.mean(axis=0),
                "scale": np.where(scale > 0, scale, 1.0)}

    def prepare(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        nan = np.isnan(X)
        Z = np.hstack([np.where(nan, self.fill, X), nan[:, self.flagged].astype(np.float64)])
        return (Z - self.mean) / self.scale

    def _forward(self, Z: np.ndarray) -> np.ndarray:
        h = Z
        for W, b in zip(self.coefs[:-1], self.intercepts[:-1]):
            h = np.maximum(h @ W + b, 0.0)
        return (h @ self.coefs[-1] + self.intercepts[-1])[:, 0]

    def raw(self, X: np.ndarray) -> np.ndarray:
        return self._forward(self.prepare(X))

    def shap(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        n, f = X.shape
        margin = self.raw(X)
        occluded = np.repeat(X, f, axis=0)
        occluded[np.arange(n * f), np.tile(np.arange(f), n)] = np.tile(self.fill, n)
        without = self.raw(occluded).reshape(n, f)
        base = float(self.raw(self.fill[None, :])[0])
        return np.hstack([margin[:, None] - without, np.full((n, 1), base)])

    def blobs(self, prefix: str = "") -> dict[str, bytes]:
        layers = {f"coef{i}": c for i, c in enumerate(self.coefs)}
        layers.update({f"intercept{i}": b for i, b in enumerate(self.intercepts)})
        return {prefix + self.FILE: npz_bytes(fill=self.fill, flagged=self.flagged,
                                              mean=self.mean, scale=self.scale,
                                              layers=np.array(len(self.coefs)), **layers)}

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes], prefix: str = "") -> "MLPModel":
        a = _npz(blobs[prefix + cls.FILE])
        k = int(a["layers"])
        return cls(a["fill"], a["flagged"], a["mean"], a["scale"],
                   [a[f"coef{i}"] for i in range(k)], [a[f"intercept{i}"] for i in range(k)])
