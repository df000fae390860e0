"""A loaded model: rows in, calibrated probabilities and their top reasons out.

Every scorer (batch scoring, the CLI, the inference container, the API's in-process mode) loads
the artifact (`serving.artifact`) with `ModelArtifact.load` and scores through it. The parts'
names are re-exported here so that `from serving.model import ...` reaches all of them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np

from serving.artifact import (
    ARTIFACT_FILES,
    BOOSTER_FILE,
    CALIBRATOR_FILE,
    EXPLANATIONS_FILE,
    FEATURES_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    TARBALL,
    SavedArtifact,
    check_features,
    content_version,
    model_family,
    read_artifact,
    save_artifact,
)
from serving.calibration import CALIBRATION_METHODS, Calibrator
from serving.explainer import PathExplainer, explanation_summary
from serving.families import LIGHTGBM, load_family
from serving.lightgbm_fast import RowScorer
from serving.vectorizer import FEATURE_KINDS, Feature, Vectorizer

__all__ = [
    "ARTIFACT_FILES", "BOOSTER_FILE", "CALIBRATION_METHODS", "CALIBRATOR_FILE",
    "EXPLANATIONS_FILE", "FEATURES_FILE", "FEATURE_KINDS", "FORMAT_VERSION", "MANIFEST_FILE",
    "TARBALL", "Calibrator", "Feature", "ModelArtifact", "PathExplainer", "SavedArtifact", "Score",
    "Vectorizer", "content_version", "explanation_summary", "save_artifact",
]

# Below this many rows LightGBM's OpenMP start-up costs more than the work it spreads.
_PARALLEL_MIN_ROWS = 5_000

@dataclass(frozen=True)
class Score:
    """One row's score: calibrated probability, raw margin and its top reasons."""

    probability: float
    raw_score: float
    reasons: list[dict] = field(default_factory=list)


class ModelArtifact:
    """A loaded model: vectorize rows, score them, explain them.

    LightGBM scores through `booster` and its fast path; another family (`model`, from
    `serving.families`) through its own margins and contributions, the same calls outside.
    """

    def __init__(self, booster: lgb.Booster | None, features: Sequence[Feature],
                 calibrator: Calibrator, manifest: Mapping | None = None,
                 explanations: Mapping | None = None, path: Path | None = None,
                 model=None) -> None:
        self.booster = booster
        self.model = model
        if booster is None and model is None:
            raise ValueError("an artifact needs a booster or a model")
        self.vectorizer = (check_features(booster, features) if booster is not None
                           else Vectorizer(features))
        self.features = self.vectorizer.features
        self.feature_names = self.vectorizer.feature_names
        self.calibrator = calibrator
        self.manifest = dict(manifest or {})
        self.explanations = dict(explanations or {})
        self.path = path
        self._row_scorer: RowScorer | None = None
        self._explainer: PathExplainer | None = None
        self._lazy_lock = threading.Lock()

    # metadata
    @property
    def version(self) -> str:
        return str(self.manifest.get("version", ""))

    @property
    def family(self) -> str:
        return LIGHTGBM if self.model is None else self.model.family

    @property
    def feature_service(self) -> str:
        return str(self.manifest.get("feature_service", ""))

    @property
    def expected_value(self) -> float:
        """The base value per-prediction contributions start from (see `PathExplainer`)."""
        if self.model is not None:
            return float(self.model.shap(self.vectorizer.one({})[None, :])[0, -1])
        return self._path_explainer().expected_value

    # loading
    @classmethod
    def load(cls, path: str | Path) -> "ModelArtifact":
        """Load an artifact directory, or a `model.tar.gz` holding its files at the root."""
        path = Path(path)
        return cls.from_blobs(read_artifact(path), path=path)

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes], path: Path | None = None) -> "ModelArtifact":
        """Build an artifact from the contents of its five files."""
        features = [Feature.from_json(f) for f in json.loads(blobs[FEATURES_FILE])["features"]]
        manifest = json.loads(blobs[MANIFEST_FILE])
        family = model_family(manifest)
        booster = model = None
        if family == LIGHTGBM:
            booster = lgb.Booster(model_str=blobs[BOOSTER_FILE].decode("utf-8"))
        else:
            model = load_family(family, blobs)
        return cls(booster, features, Calibrator.from_json(json.loads(blobs[CALIBRATOR_FILE])),
                   manifest, json.loads(blobs[EXPLANATIONS_FILE]), path=path, model=model)

    # rows -> matrix
    def vectorize(self, rows) -> np.ndarray:
        """Rows (DataFrame, list of dicts or one dict) as the model's float matrix, in order."""
        return self.vectorizer(rows)

    def vectorize_one(self, row: Mapping) -> np.ndarray:
        """One row as a float vector, without pandas (the API's path)."""
        return self.vectorizer.one(row)

    # scoring
    def _scorer(self) -> RowScorer:
        if self._row_scorer is None:
            with self._lazy_lock:
                if self._row_scorer is None:
                    self._row_scorer = RowScorer(self.booster, len(self.features))
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
        if len(X) == 0:
            return np.empty(0)
        if self.model is not None:
            return self.model.raw(X)
        if len(X) == 1:
            return np.array([self._scorer().raw(np.ascontiguousarray(X[0]))])
        return self.booster.predict(X, raw_score=True, num_threads=_threads(len(X)))

    def predict(self, rows) -> np.ndarray:
        """Calibrated purchase probabilities of rows."""
        return self.calibrator.apply(self.predict_raw(rows))

    def leaves(self, rows) -> np.ndarray:
        """The leaf index each tree sends each row to, shape (rows, trees) (LightGBM only)."""
        if self.booster is None:
            raise ValueError(f"leaf indices are LightGBM's; this model is {self.family}")
        X = self._matrix(rows)
        if len(X) == 1:
            return self._scorer().leaves(np.ascontiguousarray(X[0]))[None, :]
        if len(X) == 0:
            return np.empty((0, self.booster.num_trees()), dtype=np.int64)
        return self.booster.predict(X, pred_leaf=True, num_iteration=-1,
                                    num_threads=_threads(len(X))).astype(np.int64)

    def contributions(self, rows) -> np.ndarray:
        """Path-attribution contributions, one column per feature plus the expected value last.

        Each row sums to its raw margin (for the MLP's occlusion, and an ensemble holding one,
        only approximately: see `serving.forest`).
        """
        if self.model is not None:
            return self.model.shap(self._matrix(rows))
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
        if self.model is not None:
            raw = float(self.model.raw(x[None, :])[0])
            if top_k <= 0:
                return Score(self.calibrator.apply_one(raw), raw, [])
            contrib = self.model.shap(x[None, :])[0]
            return Score(self.calibrator.apply_one(raw), raw, self._reasons(x, contrib, top_k))
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

