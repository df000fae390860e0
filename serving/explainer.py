"""Explanations: the model's global importance (TreeSHAP, once in training) and per-row reasons.

Per-row reasons are path attributions (`PathExplainer`), a table lookup per tree rather than
exact TreeSHAP, which is too slow for the API's latency budget; like TreeSHAP, a row's
contributions plus the expected value sum exactly to its raw margin.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np


def explanation_summary(booster: lgb.Booster, X: np.ndarray) -> dict:
    """TreeSHAP expected value and global importance (mean |SHAP| per feature) over rows X."""
    names = booster.feature_name()
    if len(X) == 0:
        raise ValueError("need at least one row to summarise explanations")
    contrib = booster.predict(X, pred_contrib=True)
    mean_abs = np.abs(contrib[:, :-1]).mean(axis=0)
    order = np.argsort(-mean_abs, kind="stable")
    return {
        "method": "treeshap",
        "rows": int(len(X)),
        "expected_value": float(contrib[0, -1]),
        "importance": [{"feature": names[i], "mean_abs_shap": float(mean_abs[i])} for i in order],
    }


class PathExplainer:
    """Path attributions (Saabas) of a LightGBM model, precomputed per (tree, leaf) at load.

    Each split on a row's path moves the tree's output from the parent's value to the child's,
    and that change is credited to the split's feature; contributions + `expected_value` (the
    sum of the trees' root values) equal the raw margin.
    """

    def __init__(self, booster: lgb.Booster) -> None:
        trees = booster.dump_model()["tree_info"]
        self.n_features = booster.num_feature()
        self.n_trees = len(trees)
        self.max_leaves = max(int(t["num_leaves"]) for t in trees) if trees else 1
        self.leaf_values = np.zeros((self.n_trees, self.max_leaves))
        paths: list[list[tuple[int, float]]] = [[] for _ in range(self.n_trees * self.max_leaves)]
        self.expected_value = 0.0
        for t, tree in enumerate(trees):
            root = tree["tree_structure"]
            root_value = float(root.get("internal_value", root.get("leaf_value", 0.0)))
            self.expected_value += root_value
            stack = [(root, ())]
            while stack:
                node, path = stack.pop()
                if "leaf_value" in node:
                    leaf = int(node.get("leaf_index", 0))
                    value = float(node["leaf_value"])
                    self.leaf_values[t, leaf] = value
                    # the last step ends on the exact leaf value, so the sums are exact
                    paths[t * self.max_leaves + leaf] = list(path)
                    continue
                value = float(node["internal_value"])
                for child in (node["left_child"], node["right_child"]):
                    stack.append((child, path + ((int(node["split_feature"]), value),)))
        # CSR over (tree, leaf): the features on the path and the change each split made
        counts = np.array([len(p) for p in paths], dtype=np.int64)
        self._indptr = np.concatenate([[0], np.cumsum(counts)])
        features, deltas = [], []
        for t in range(self.n_trees):
            for leaf in range(self.max_leaves):
                path = paths[t * self.max_leaves + leaf]
                values = [v for _, v in path] + [self.leaf_values[t, leaf]]
                for (feature, before), after in zip(path, values[1:]):
                    features.append(feature)
                    deltas.append(after - before)
        self._features = np.asarray(features, dtype=np.int64)
        self._deltas = np.asarray(deltas, dtype=np.float64)
        self._tree_offsets = np.arange(self.n_trees, dtype=np.int64) * self.max_leaves

    def raw(self, leaves: np.ndarray) -> np.ndarray:
        """Raw margins from leaf indices of shape (rows, trees)."""
        leaves = np.atleast_2d(leaves)
        return self.leaf_values[np.arange(leaves.shape[1]), leaves].sum(axis=1)

    def contributions(self, leaves: np.ndarray) -> np.ndarray:
        """Per-feature contributions, shape (rows, features), from leaf indices (rows, trees)."""
        leaves = np.atleast_2d(np.asarray(leaves, dtype=np.int64))
        n = leaves.shape[0]
        rows = (leaves + self._tree_offsets[: leaves.shape[1]]).ravel()
        starts = self._indptr[rows]
        lengths = self._indptr[rows + 1] - starts
        ends = np.cumsum(lengths)
        entries = np.arange(ends[-1] if len(ends) else 0) + np.repeat(starts - ends + lengths,
                                                                      lengths)
        owners = np.repeat(np.repeat(np.arange(n), leaves.shape[1]), lengths)
        flat = np.bincount(owners * self.n_features + self._features[entries],
                           weights=self._deltas[entries], minlength=n * self.n_features)
        return flat.reshape(n, self.n_features)

