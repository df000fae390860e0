"""Served scores against reality: their distribution and, once labels arrive, their quality."""

from __future__ import annotations

import numpy as np
import pandas as pd

from intent_assets.monitoring.drift import psi, psi_status
from intent_assets.reports.metrics import ece, pr_auc, weighted_log_loss

# A live PR-AUC more than 15 % below the test set's, or log loss / ECE clearly worse, is decay.
MAX_PR_AUC_DROP = 0.15
MAX_LOG_LOSS_RISE = 0.15
MAX_ECE = 0.03


def served_scores(decisions: pd.DataFrame) -> pd.DataFrame:
    """The model's own answers from the decision log: fallbacks (the prior) are not the model's."""
    if decisions.empty:
        return pd.DataFrame(columns=["ts", "session_id", "probability", "model_version"])
    fallback = decisions.get("fallback", pd.Series([[]] * len(decisions), index=decisions.index))
    own = decisions[fallback.map(lambda f: not f)]
    return own[["ts", "session_id", "probability", "model_version"]].reset_index(drop=True)


def score_distribution(reference: np.ndarray, current: np.ndarray) -> dict:
    """PSI of served probabilities against the model's test-set predictions, with their means."""
    value = psi(reference, current)
    return {"psi": value, "status": psi_status(value), "served": int(len(current)),
            "mean_served": float(np.mean(current)) if len(current) else float("nan"),
            "mean_reference": float(np.mean(reference))}


def labelled_scores(scores: pd.DataFrame, sessions: pd.DataFrame) -> pd.DataFrame:
    """Served scores of human sessions with the session's label, each session weighing 1 in
    total (weight 1/K for K decisions), as the model's test set weighs its snapshots."""
    humans = sessions[~sessions["is_bot"].astype(bool)][["session_id", "label"]]
    joined = scores.merge(humans, on="session_id")
    return joined.assign(weight=1.0 / joined.groupby("session_id")["session_id"].transform("size"))


def performance_decay(labelled: pd.DataFrame, reference: dict) -> dict:
    """Live PR-AUC, log loss and ECE against the model's test metrics, and whether it decayed."""
    y = labelled["label"].to_numpy(float)
    p = labelled["probability"].to_numpy(float)
    w = labelled["weight"].to_numpy(float) if "weight" in labelled else None
    live = {"pr_auc": pr_auc(y, p, w), "log_loss": weighted_log_loss(y, p, w), "ece": ece(y, p, w)}
    problems = []
    if live["pr_auc"] is not None and reference.get("pr_auc"):
        if live["pr_auc"] < (1 - MAX_PR_AUC_DROP) * reference["pr_auc"]:
            problems.append(f"PR-AUC {live['pr_auc']:.4f} vs test {reference['pr_auc']:.4f}")
    if reference.get("log_loss") and live["log_loss"] > (1 + MAX_LOG_LOSS_RISE) * reference["log_loss"]:
        problems.append(f"log loss {live['log_loss']:.4f} vs test {reference['log_loss']:.4f}")
    if live["ece"] > MAX_ECE:
        problems.append(f"ECE {live['ece']:.4f} above {MAX_ECE}")
    return {"rows": int(len(labelled)), "live": live, "reference": reference, "decayed": bool(problems),
            "problems": problems}
