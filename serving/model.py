"""The model artifact: one directory (or its `model.tar.gz`) that every scorer loads the same way.

Training writes it with `save_artifact`; batch scoring, the CLI, the SageMaker-contract container
and the API's in-process mode read it with `ModelArtifact.load`. The directory holds:

- `booster.txt`: the LightGBM model (text format), which outputs a raw margin (log-odds);
- `calibrator.json`: how a margin becomes a probability: `platt` (sigmoid(a * margin + b)),
  `isotonic` (np.interp over stored breakpoints) or `none` (sigmoid(margin));
- `features.json`: the ordered features with kind (`int`, `float`, `categorical`), the default
  used when a value is absent, and for categoricals the category list fixed in training;
- `manifest.json`: version, FeatureService name, creation time, label, row counts, metrics,
  chosen calibrator, hyperparameters;
- `explanations.json`: the TreeSHAP expected value and global mean |SHAP| per feature (the
  model's global importance, computed once in training).

Per-prediction reasons are path attributions (`PathExplainer`), not TreeSHAP: exact TreeSHAP
costs about 1.6 ms per row on a 200-tree model, which alone breaks the API's latency budget; a
path attribution is a table lookup per tree (tens of microseconds) and, like TreeSHAP, its
contributions plus the expected value sum exactly to the raw margin.

`model.tar.gz`, written next to those files inside the directory, holds the same five files at
its root (what SageMaker extracts into /opt/ml/model) and loads unchanged.

Vectorizing is the one place a row becomes model input, in training and in serving: an absent
column, None or NaN takes the feature's default (None in features.json means "missing", which
LightGBM routes the way it learned for missing values); a categorical value not in the training
list is missing. Because training builds its matrix with the same `vectorize`, an input means
the same thing in both.

Only numpy, pandas and lightgbm are imported: this module runs inside the serving container.
"""

from __future__ import annotations

import bisect
import ctypes
import datetime as dt
import gzip
import hashlib
import io
import json
import math
import tarfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

FORMAT_VERSION = 1
BOOSTER_FILE = "booster.txt"
CALIBRATOR_FILE = "calibrator.json"
FEATURES_FILE = "features.json"
MANIFEST_FILE = "manifest.json"
EXPLANATIONS_FILE = "explanations.json"
ARTIFACT_FILES = (BOOSTER_FILE, CALIBRATOR_FILE, FEATURES_FILE, MANIFEST_FILE, EXPLANATIONS_FILE)
TARBALL = "model.tar.gz"

FEATURE_KINDS = ("int", "float", "categorical")
CALIBRATION_METHODS = ("platt", "isotonic", "none")

# Below this many rows LightGBM's OpenMP start-up costs more than the work it spreads.
_PARALLEL_MIN_ROWS = 5_000
# Up to this many records are vectorized row by row (~10 µs each) rather than through a DataFrame
# (~4 ms to build and convert 46 columns, whatever the row count).
_RECORDS_WITHOUT_PANDAS = 1_000
_NAN = float("nan")


# -- feature specs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Feature:
    """One model input: name, kind, default for an absent value, and categories if categorical."""

    name: str
    kind: str
    default: Any = None
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature {self.name!r}: kind must be one of {FEATURE_KINDS}, "
                             f"got {self.kind!r}")
        if self.kind != "categorical" and self.categories:
            raise ValueError(f"feature {self.name!r}: only categoricals have categories")

    def fill_value(self) -> float:
        """The model-input number an absent value becomes (NaN: missing)."""
        if self.default is None:
            return _NAN
        if self.kind == "categorical":
            try:
                return float(self.categories.index(str(self.default)))
            except ValueError:
                return _NAN
        return float(self.default)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind,
                               "default": _json_value(self.default)}
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_json(cls, data: Mapping) -> "Feature":
        return cls(name=data["name"], kind=data["kind"], default=data.get("default"),
                   categories=tuple(data.get("categories") or ()))


def _json_value(value: Any) -> Any:
    """A default as JSON has it: NaN and None are both null (missing)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return str(value)


# -- calibration -------------------------------------------------------------------------------

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


# -- explanations ------------------------------------------------------------------------------

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


# -- the single-row fast path ------------------------------------------------------------------

_PREDICT_RAW_SCORE = 1
_PREDICT_LEAF_INDEX = 2
_DTYPE_FLOAT64 = 1


class _RowScorer:
    """LightGBM's C single-row fast path: a few microseconds for a margin, one thread.

    `Booster.predict` pays for input checks and an OpenMP fan-out on every call, which dominates
    scoring one row. The fast-path handles are set up once per prediction type; LightGBM holds
    a lock inside the call, and every call gets its own output buffer, so threads may share it.
    """

    def __init__(self, booster: lgb.Booster, n_features: int) -> None:
        from lightgbm.basic import _LIB, _safe_call

        self._lib, self._check = _LIB, _safe_call
        self._booster = booster  # the handles point into it: keep it alive as long as they are
        self._n = n_features
        self._n_trees = booster.num_trees()
        self._raw = self._init(_PREDICT_RAW_SCORE)
        self._leaves = self._init(_PREDICT_LEAF_INDEX)

    def _init(self, predict_type: int) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
            self._booster._handle, ctypes.c_int(predict_type), ctypes.c_int(0),
            ctypes.c_int(-1), ctypes.c_int(_DTYPE_FLOAT64), ctypes.c_int32(self._n),
            ctypes.c_char_p(b"num_threads=1"), ctypes.byref(handle)))
        return handle

    def _call(self, handle: ctypes.c_void_p, row: np.ndarray, size: int) -> np.ndarray:
        out = np.empty(size, dtype=np.float64)
        out_len = ctypes.c_int64()
        self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFast(
            handle, ctypes.c_void_p(row.ctypes.data), ctypes.byref(out_len),
            ctypes.c_void_p(out.ctypes.data)))
        return out

    def raw(self, row: np.ndarray) -> float:
        return float(self._call(self._raw, row, 1)[0])

    def leaves(self, row: np.ndarray) -> np.ndarray:
        """The leaf each tree sends the row to."""
        return self._call(self._leaves, row, self._n_trees).astype(np.int64)

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        for name in ("_raw", "_leaves"):
            handle = getattr(self, name, None)
            if handle is not None and handle.value:
                lib.LGBM_FastConfigFree(handle)


# -- per-prediction reasons ---------------------------------------------------------------------

class PathExplainer:
    """Path attributions (Saabas; what XGBoost calls approximate contributions) of a LightGBM model.

    Along the path a row takes through a tree, each split moves the tree's output from the
    parent node's value to the child's; that change is credited to the split's feature. So the
    contributions of a row depend only on the leaves it reaches, and are precomputed per
    (tree, leaf) at load: explaining a row is one leaf-index prediction and a sparse sum. For
    every row, contributions + `expected_value` (the sum of the trees' root values) equal the
    raw margin, as with TreeSHAP; unlike TreeSHAP, a split near the root gets the whole change
    it causes, so features high in the trees weigh a little more.
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


# -- rows -> model input -----------------------------------------------------------------------

class Vectorizer:
    """Turns rows into the model's float matrix, the same way in training and in serving."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self.features = tuple(features)
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        self.feature_names: tuple[str, ...] = tuple(names)
        self._fills = np.array([f.fill_value() for f in self.features], dtype=np.float64)
        self._codes: tuple[dict[str, float] | None, ...] = tuple(
            {c: float(i) for i, c in enumerate(f.categories)} if f.kind == "categorical" else None
            for f in self.features)
        self._plan = tuple(zip(self.feature_names, self._fills.tolist(), self._codes))

    @property
    def categorical_indices(self) -> tuple[int, ...]:
        return tuple(i for i, f in enumerate(self.features) if f.kind == "categorical")

    def __call__(self, rows) -> np.ndarray:
        """Rows (DataFrame, list of dicts or one dict) as a float matrix, features in order."""
        if isinstance(rows, pd.DataFrame):
            return self.frame(rows)
        if isinstance(rows, Mapping):
            return self.one(rows)[None, :]
        rows = list(rows)
        if not rows:
            return np.empty((0, len(self.features)))
        if len(rows) <= _RECORDS_WITHOUT_PANDAS:
            return np.vstack([self.one(row) for row in rows])
        return self.frame(pd.DataFrame.from_records(rows))

    def one(self, row: Mapping) -> np.ndarray:
        """One row (a mapping of feature name to value) as a float vector, without pandas."""
        x = []
        append = x.append
        get = row.get
        for name, fill, codes in self._plan:
            v = get(name)
            if v is None:
                append(fill)
            elif codes is None:
                try:
                    v = float(v)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"feature {name!r} must be a number, got {v!r}") from exc
                append(fill if v != v else v)
            elif v.__class__ is str:
                append(codes.get(v, _NAN))
            elif isinstance(v, float) and v != v:
                append(fill)
            else:
                append(codes.get(str(v), _NAN))
        return np.array(x, dtype=np.float64)

    def frame(self, df: pd.DataFrame) -> np.ndarray:
        """A DataFrame as a float matrix; columns the model does not use are ignored."""
        X = np.empty((len(df), len(self.features)), dtype=np.float64)
        for j, (feature, fill, codes) in enumerate(zip(self.features, self._fills, self._codes)):
            if feature.name not in df.columns:
                X[:, j] = fill
                continue
            col = df[feature.name]
            missing = col.isna().to_numpy()
            if codes is None:
                try:
                    values = pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64,
                                                                        na_value=np.nan)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"feature {feature.name!r} must be numeric: {exc}") from exc
            else:
                text = col.astype(object).where(~missing, None)
                if not (pd.api.types.is_string_dtype(col) or col.dtype == object):
                    text = text.map(lambda v: None if v is None else str(v))
                found = pd.Index(feature.categories, dtype=object).get_indexer(
                    text.to_numpy(dtype=object))
                values = np.where(found >= 0, found, np.nan).astype(np.float64)
            values[missing] = fill
            X[:, j] = values
        return X

    def decode(self, j: int, value: float) -> Any:
        """A model-input number as a person reads it: the category, the number, or None."""
        if value != value:
            return None
        feature = self.features[j]
        if feature.kind == "categorical":
            return feature.categories[int(value)]
        if feature.kind == "int" and float(value).is_integer():
            return int(value)
        return float(value)


# -- the artifact ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Score:
    """One row's score: calibrated probability, raw margin and its top reasons."""

    probability: float
    raw_score: float
    reasons: list[dict] = field(default_factory=list)


class ModelArtifact:
    """A loaded model: vectorize rows, score them, explain them."""

    def __init__(self, booster: lgb.Booster, features: Sequence[Feature], calibrator: Calibrator,
                 manifest: Mapping | None = None, explanations: Mapping | None = None,
                 path: Path | None = None) -> None:
        self.booster = booster
        self.vectorizer = Vectorizer(features)
        self.features = self.vectorizer.features
        self.feature_names = self.vectorizer.feature_names
        if list(booster.feature_name()) != list(self.feature_names):
            raise ValueError("features.json does not match the booster's features: "
                             f"{list(self.feature_names)} vs {booster.feature_name()}")
        self.calibrator = calibrator
        self.manifest = dict(manifest or {})
        self.explanations = dict(explanations or {})
        self.path = path
        self._row_scorer: _RowScorer | None = None
        self._explainer: PathExplainer | None = None
        self._lazy_lock = threading.Lock()

    # metadata
    @property
    def version(self) -> str:
        return str(self.manifest.get("version", ""))

    @property
    def feature_service(self) -> str:
        return str(self.manifest.get("feature_service", ""))

    @property
    def expected_value(self) -> float:
        """The base value per-prediction contributions start from (see `PathExplainer`)."""
        return self._path_explainer().expected_value

    # loading
    @classmethod
    def load(cls, path: str | Path) -> "ModelArtifact":
        """Load an artifact directory, or a `model.tar.gz` holding its files at the root."""
        path = Path(path)
        if path.is_dir():
            blobs = {}
            for name in ARTIFACT_FILES:
                if not (path / name).is_file():
                    raise FileNotFoundError(f"model artifact {path} lacks {name}")
                blobs[name] = (path / name).read_bytes()
        elif path.is_file():
            blobs = _read_tarball(path)
        else:
            raise FileNotFoundError(f"no model artifact at {path}")
        return cls.from_blobs(blobs, path=path)

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes], path: Path | None = None) -> "ModelArtifact":
        """Build an artifact from the contents of its five files."""
        features = [Feature.from_json(f) for f in json.loads(blobs[FEATURES_FILE])["features"]]
        booster = lgb.Booster(model_str=blobs[BOOSTER_FILE].decode("utf-8"))
        return cls(booster, features, Calibrator.from_json(json.loads(blobs[CALIBRATOR_FILE])),
                   json.loads(blobs[MANIFEST_FILE]), json.loads(blobs[EXPLANATIONS_FILE]),
                   path=path)

    # rows -> matrix
    def vectorize(self, rows) -> np.ndarray:
        """Rows (DataFrame, list of dicts or one dict) as the model's float matrix, in order."""
        return self.vectorizer(rows)

    def vectorize_one(self, row: Mapping) -> np.ndarray:
        """One row as a float vector, without pandas (the API's path)."""
        return self.vectorizer.one(row)

    # scoring
    def _scorer(self) -> _RowScorer:
        if self._row_scorer is None:
            with self._lazy_lock:
                if self._row_scorer is None:
                    self._row_scorer = _RowScorer(self.booster, len(self.features))
        return self._row_scorer

    def _path_explainer(self) -> PathExplainer:
        if self._explainer is None:
            with self._lazy_lock:
                if self._explainer is None:
                    self._explainer = PathExplainer(self.booster)
        return self._explainer

    def _matrix(self, rows) -> np.ndarray:
        if isinstance(rows, np.ndarray):
            X = np.asarray(rows, dtype=np.float64)
            if X.ndim != 2 or X.shape[1] != len(self.features):
                raise ValueError(f"a matrix must have {len(self.features)} columns")
            return X
        return self.vectorizer(rows)

    def predict_raw(self, rows) -> np.ndarray:
        """Raw margins (log-odds before calibration) of rows, or of an already vectorized matrix."""
        X = self._matrix(rows)
        if len(X) == 1:
            return np.array([self._scorer().raw(np.ascontiguousarray(X[0]))])
        if len(X) == 0:
            return np.empty(0)
        return self.booster.predict(X, raw_score=True, num_threads=_threads(len(X)))

    def predict(self, rows) -> np.ndarray:
        """Calibrated purchase probabilities of rows."""
        return self.calibrator.apply(self.predict_raw(rows))

    def leaves(self, rows) -> np.ndarray:
        """The leaf index each tree sends each row to, shape (rows, trees)."""
        X = self._matrix(rows)
        if len(X) == 1:
            return self._scorer().leaves(np.ascontiguousarray(X[0]))[None, :]
        if len(X) == 0:
            return np.empty((0, self.booster.num_trees()), dtype=np.int64)
        return self.booster.predict(X, pred_leaf=True, num_iteration=-1,
                                    num_threads=_threads(len(X))).astype(np.int64)

    def contributions(self, rows) -> np.ndarray:
        """Path-attribution contributions, one column per feature plus the expected value last.

        Each row sums to its raw margin.
        """
        explainer = self._path_explainer()
        contrib = explainer.contributions(self.leaves(rows))
        return np.hstack([contrib, np.full((len(contrib), 1), explainer.expected_value)])

    def explain(self, rows, top_k: int = 3) -> list[list[dict]]:
        """Per row, the top_k features by |contribution|: {feature, value, contribution}."""
        X = self._matrix(rows)
        contrib = self.contributions(X)
        return [self._reasons(X[i], contrib[i], top_k) for i in range(len(X))]

    def score_one(self, row: Mapping, top_k: int = 3) -> Score:
        """Score one row, with its top_k reasons: one leaf-index call gives both."""
        x = self.vectorizer.one(row)
        scorer = self._scorer()
        if top_k <= 0:
            raw = scorer.raw(x)
            return Score(self.calibrator.apply_one(raw), raw, [])
        explainer = self._path_explainer()
        leaves = scorer.leaves(x)[None, :]
        raw = float(explainer.raw(leaves)[0])
        contrib = explainer.contributions(leaves)[0]
        return Score(self.calibrator.apply_one(raw), raw, self._reasons(x, contrib, top_k))

    def _reasons(self, x: np.ndarray, contrib: np.ndarray, top_k: int) -> list[dict]:
        """The top_k features by |contribution| (`contrib` per feature, expected value excluded)."""
        contrib = contrib[: len(self.features)]
        k = min(top_k, len(contrib))
        if k <= 0:
            return []
        top = np.argsort(-np.abs(contrib), kind="stable")[:k]
        return [{"feature": self.feature_names[j], "value": self.vectorizer.decode(j, x[j]),
                 "contribution": float(contrib[j])} for j in top]


def _threads(rows: int) -> int:
    return 0 if rows >= _PARALLEL_MIN_ROWS else 1


def _read_tarball(path: Path) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar.getmembers():
            name = member.name[2:] if member.name.startswith("./") else member.name
            if member.isfile() and name in ARTIFACT_FILES:
                blobs[name] = tar.extractfile(member).read()
    missing = [n for n in ARTIFACT_FILES if n not in blobs]
    if missing:
        raise FileNotFoundError(f"model archive {path} lacks {missing} at its root")
    return blobs


# -- saving ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SavedArtifact:
    directory: Path
    tarball: Path
    version: str


def content_version(blobs: Mapping[str, bytes]) -> str:
    """A version id from what determines predictions: booster, calibrator and features."""
    digest = hashlib.sha256()
    for name in (BOOSTER_FILE, CALIBRATOR_FILE, FEATURES_FILE):
        digest.update(name.encode())
        digest.update(blobs[name])
    return digest.hexdigest()[:12]


def save_artifact(directory: str | Path, *, booster: lgb.Booster, features: Sequence[Feature],
                  calibrator: Calibrator, manifest: Mapping | None = None,
                  explanations: Mapping | None = None, feature_service: str = "",
                  created_at: dt.datetime | None = None, versioned: bool = False
                  ) -> SavedArtifact:
    """Write the artifact's five files into `directory` and pack them as `model.tar.gz` there.

    With `versioned`, they go to `directory/<version>/` instead, so models never overwrite
    each other.

    The manifest gets `format_version`, `version` (a hash of booster, calibrator and features,
    so equal models get equal versions), `feature_service`, `created_at` and the feature names,
    on top of whatever `manifest` holds (label, rows, metrics, hyperparameters...).
    """
    directory = Path(directory)
    features = list(features)
    # checks names and order against the booster before anything is written
    ModelArtifact(booster, features, calibrator)
    blobs = {
        BOOSTER_FILE: booster.model_to_string().encode("utf-8"),
        CALIBRATOR_FILE: _dumps(calibrator.to_json()),
        FEATURES_FILE: _dumps({"features": [f.to_json() for f in features]}),
    }
    version = content_version(blobs)
    if versioned:
        directory = directory / version
    directory.mkdir(parents=True, exist_ok=True)
    created = (created_at or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    full_manifest = {
        **dict(manifest or {}),
        "format_version": FORMAT_VERSION,
        "version": version,
        "feature_service": feature_service or (manifest or {}).get("feature_service", ""),
        "created_at": created.isoformat(),
        "features": [f.name for f in features],
        "calibrator": {**dict((manifest or {}).get("calibrator", {})),
                       "method": calibrator.method},
    }
    blobs[MANIFEST_FILE] = _dumps(full_manifest)
    blobs[EXPLANATIONS_FILE] = _dumps(dict(explanations or {}))
    for name in ARTIFACT_FILES:
        (directory / name).write_bytes(blobs[name])
    tarball = directory / TARBALL
    _write_tarball(tarball, blobs)
    return SavedArtifact(directory=directory, tarball=tarball, version=version)


def _dumps(obj: Any) -> bytes:
    return (json.dumps(_finite(obj), indent=2, allow_nan=False, default=_json_default)
            + "\n").encode("utf-8")


def _finite(obj: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers (an undefined metric is null)."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _write_tarball(path: Path, blobs: Mapping[str, bytes]) -> None:
    """A gzip tar of the files at its root, byte-identical for identical files (no mtimes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ARTIFACT_FILES:
            info = tarfile.TarInfo(name)
            info.size = len(blobs[name])
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(blobs[name]))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0,
                                               filename="") as gz:
        gz.write(raw.getvalue())
    tmp.replace(path)
