"""Bulk scoring of stored snapshots with the artifact the endpoint serves (the `batch_scores` asset).

`score_snapshots` is pure: a DataFrame in, a DataFrame out, no I/O. The model reads the columns
named like its features (absent ones take the model's defaults, as online), so it takes the
training-set-shaped table (session snapshots with user and product features joined).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from serving.model import ModelArtifact
from serving.policy import PolicyParams, decide

ID_COLUMNS = ("snapshot_id", "session_id", "user_id", "product_id", "event_timestamp", "date",
              "label")
SCORE_COLUMNS = ("probability", "raw_score", "band", "action", "model_version")


def score_snapshots(artifact: ModelArtifact, snapshots: pd.DataFrame,
                    policy: PolicyParams | None = None, top_k: int = 0) -> pd.DataFrame:
    """Score every snapshot row: its ids, probability, raw score, band, action, model version.

    With top_k > 0 a `reasons` column holds each row's top reasons as JSON (path attributions, as online).
    Rows keep their order and index.
    """
    policy = policy or PolicyParams()
    ids = [c for c in ID_COLUMNS if c in snapshots.columns]
    out = snapshots[ids].copy()
    if snapshots.empty:
        for name in SCORE_COLUMNS:
            out[name] = pd.Series(dtype="float64" if name in ("probability", "raw_score")
                                  else "object")
        return out
    X = artifact.vectorize(snapshots)
    raw = artifact.predict_raw(X)
    probability = artifact.calibrator.apply(raw)
    decisions = [decide(float(p), policy) for p in np.clip(probability, 0.0, 1.0)]
    out["probability"] = probability
    out["raw_score"] = raw
    out["band"] = [d.band for d in decisions]
    out["action"] = [d.action for d in decisions]
    out["model_version"] = artifact.version
    if top_k > 0:
        out["reasons"] = [json.dumps(r) for r in artifact.explain(X, top_k)]
    return out
