"""Drift: the feature vectors the API served, against the training set the model learned from.

The one drift monitor of features (`served_feature_drift` on `online_offline_consistency`); the
served scores are judged by `score_distribution` on `served_scores`. What was served, not what
the offline pipeline would have computed: skew and drift are both seen where they happen.
"""

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from intent_assets.monitoring.drift import feature_psi, max_judged_psi, worst_status

SERVED_FEATURE_DRIFT = "served_feature_drift"


def no_data(check: str, reason: str, **metadata) -> AssetCheckResult:
    """A check that had nothing to judge: a warning that says why, never a pass."""
    return AssetCheckResult(check_name=check, passed=False, severity=AssetCheckSeverity.WARN,
                            metadata={"status": "no data", "reason": reason, **metadata})


def served_feature_drift(reference: pd.DataFrame, served: pd.DataFrame,
                         features: list[str], min_rows: int) -> tuple[AssetCheckResult,
                                                                      pd.DataFrame]:
    """The check's verdict on the served vectors' PSI per feature against the training set
    (warn at 0.1, fail at 0.2; calendar features shown, not judged), and the PSI table.

    Too few served vectors, an empty training set or no feature in both: a warning with the
    reason."""
    table = feature_psi(reference, served, features)
    reason = (f"{len(served)} served vectors, {min_rows} needed for a PSI"
              if len(served) < min_rows else
              "the training set is empty" if reference.empty else
              "no served feature is in the training set" if table.empty else None)
    if reason:
        return no_data(SERVED_FEATURE_DRIFT, reason, rows=len(served)), table
    status = worst_status(table["status"])
    return AssetCheckResult(
        check_name=SERVED_FEATURE_DRIFT, passed=status != "alert",
        severity=AssetCheckSeverity.ERROR if status == "alert" else AssetCheckSeverity.WARN,
        metadata={"status": status, "rows": len(served), "max_psi": max_judged_psi(table),
                  "features_warn": int((table["status"] == "warn").sum()),
                  "features_alert": int((table["status"] == "alert").sum()),
                  "psi": MetadataValue.md(table.round(4).to_markdown(index=False))}), table
