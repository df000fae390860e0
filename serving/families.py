"""The model families an artifact can hold besides LightGBM, behind one small interface.

Every family turns the vectorized matrix into a raw margin (log-odds before calibration) and
explains it as per-feature contributions plus an expected value:

| family | file(s) | margin | reasons |
|---|---|---|---|
| `xgboost` | `xgboost.ubj` | XGBoost's margin | TreeSHAP (`pred_contribs=True`), exact |
| `catboost` | `catboost.cbm` | CatBoost's raw formula value | TreeSHAP (`ShapValues`), exact |
| `random_forest` | `forest.npz` | logit of the trees' mean P(1) | path attributions (`serving.forest`) |
| `mlp` | `mlp.npz` | the network's output logit | occlusion (`serving.forest`) |
| `ensemble` | `ensemble.json` + members' files | weighted sum of members' margins | weighted members' reasons |

LightGBM keeps its own path in `serving.model` (the ctypes fast path); `LightGBMModel` here only
gives training one interface over all families. Libraries are imported when a family is loaded,
so a LightGBM-only server never imports XGBoost or CatBoost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from serving.forest import ForestModel, MLPModel

LIGHTGBM = "lightgbm"
FAMILIES = (LIGHTGBM, "xgboost", "catboost", "random_forest", "mlp")
ENSEMBLE = "ensemble"


class LightGBMModel:
    """A LightGBM booster behind the family interface (training's view; serving has its own)."""

    family = LIGHTGBM
    explanation_method = "treeshap"

    def __init__(self, booster) -> None:
        self.booster = booster
        self._row = None

    def raw(self, X: np.ndarray) -> np.ndarray:
        if len(X) == 1:  # an ensemble member's single row: the ctypes fast path
            if self._row is None:
                from serving.lightgbm_fast import RowScorer

                self._row = RowScorer(self.booster, self.booster.num_feature())
            return np.array([self._row.raw(np.ascontiguousarray(X[0], dtype=np.float64))])
        return self.booster.predict(X, raw_score=True, num_threads=_threads(len(X)))

    def shap(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(X, pred_contrib=True, num_threads=_threads(len(X)))

    def blobs(self, prefix: str = "") -> dict[str, bytes]:
        return {prefix + "booster.txt": self.booster.model_to_string().encode("utf-8")}

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes], prefix: str = "") -> "LightGBMModel":
        import lightgbm as lgb

        return cls(lgb.Booster(model_str=blobs[prefix + "booster.txt"].decode("utf-8")))


class XGBoostModel:
    """An XGBoost booster; one thread per call, like the LightGBM fast path."""

    family = "xgboost"
    explanation_method = "treeshap"
    FILE = "xgboost.ubj"

    def __init__(self, booster) -> None:
        booster.set_param({"nthread": 1})
        self.booster = booster

    def raw(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(np.asarray(X, dtype=np.float64),
                                                       predict_type="margin"), dtype=np.float64)

    def shap(self, X: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        return np.asarray(self.booster.predict(xgb.DMatrix(np.asarray(X, dtype=np.float64), nthread=1),
                                               pred_contribs=True), dtype=np.float64)

    def blobs(self, prefix: str = "") -> dict[str, bytes]:
        return {prefix + self.FILE: bytes(self.booster.save_raw(raw_format="ubj"))}

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes], prefix: str = "") -> "XGBoostModel":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(blobs[prefix + cls.FILE]))
        return cls(booster)


class CatBoostModel:
    """A CatBoost model (numeric features: categoricals arrive as their category codes)."""

    family = "catboost"
    explanation_method = "treeshap"
    FILE = "catboost.cbm"

    def __init__(self, model) -> None:
        self.model = model

    def raw(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(np.asarray(X, dtype=np.float64),
                                             prediction_type="RawFormulaVal", thread_count=1),
                          dtype=np.float64)

    def shap(self, X: np.ndarray) -> np.ndarray:
        from catboost import Pool

        return np.asarray(self.model.get_feature_importance(
            Pool(np.asarray(X, dtype=np.float64)), type="ShapValues", thread_count=1),
            dtype=np.float64)

    def blobs(self, prefix: str = "") -> dict[str, bytes]:
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.cbm")
            self.model.save_model(path)
            with open(path, "rb") as fh:
                return {prefix + self.FILE: fh.read()}

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes], prefix: str = "") -> "CatBoostModel":
        from catboost import CatBoost

        model = CatBoost()
        model.load_model(blob=blobs[prefix + cls.FILE])
        return cls(model)


class EnsembleModel:
    """A weighted sum of members' raw margins; its reasons are the members' reasons, weighted."""

    family = ENSEMBLE
    FILE = "ensemble.json"

    def __init__(self, members: Sequence, weights: Sequence[float], record: Mapping | None = None
                 ) -> None:
        if len(members) != len(weights) or not members:
            raise ValueError("an ensemble needs one weight per member, and members")
        self.members = list(members)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.record = dict(record or {})

    @property
    def explanation_method(self) -> str:
        return "weighted members: " + ", ".join(
            f"{w:.3f} x {m.family} ({m.explanation_method})"
            for m, w in zip(self.members, self.weights))

    def raw(self, X: np.ndarray) -> np.ndarray:
        return sum(w * m.raw(X) for m, w in zip(self.members, self.weights))

    def shap(self, X: np.ndarray) -> np.ndarray:
        return sum(w * m.shap(X) for m, w in zip(self.members, self.weights))

    def blobs(self, prefix: str = "") -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        names = []
        for k, member in enumerate(self.members):
            member_prefix = f"{prefix}member{k}_"
            out.update(member.blobs(member_prefix))
            names.append({"family": member.family, "prefix": member_prefix,
                          "weight": float(self.weights[k])})
        out[prefix + self.FILE] = json.dumps({"members": names, **self.record},
                                             indent=2).encode("utf-8")
        return out

    @classmethod
    def from_blobs(cls, blobs: Mapping[str, bytes], prefix: str = "") -> "EnsembleModel":
        spec = json.loads(blobs[prefix + cls.FILE])
        members = [load_family(m["family"], blobs, m["prefix"]) for m in spec["members"]]
        record = {k: v for k, v in spec.items() if k != "members"}
        return cls(members, [m["weight"] for m in spec["members"]], record)


_CLASSES = {LIGHTGBM: LightGBMModel, "xgboost": XGBoostModel, "catboost": CatBoostModel,
            "random_forest": ForestModel, "mlp": MLPModel, ENSEMBLE: EnsembleModel}


def load_family(family: str, blobs: Mapping[str, bytes], prefix: str = ""):
    """The family's model from an artifact's files (`prefix`: an ensemble member's)."""
    if family not in _CLASSES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(_CLASSES)}")
    return _CLASSES[family].from_blobs(blobs, prefix)


def model_blob_names(family: str, blobs: Mapping[str, bytes]) -> list[str]:
    """The artifact files that hold a family's model (what its version hashes)."""
    if family == LIGHTGBM:
        return ["booster.txt"]
    if family == ENSEMBLE:
        return sorted(n for n in blobs if n.startswith("member") or n == EnsembleModel.FILE)
    return [_CLASSES[family].FILE]


def _threads(rows: int) -> int:
    # below a few thousand rows OpenMP's start-up costs more than it spreads (serving.model)
    return 0 if rows >= 5_000 else 1
