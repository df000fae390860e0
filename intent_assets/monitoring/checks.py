"""Daily drift check: the day's session snapshots against the training set they will be judged by."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, AssetIn, MetadataValue, asset_check

from intent_assets.monitoring.drift import feature_psi, max_judged_psi, worst_status
from intent_assets.partitions import daily_partitions
from intent_resources.storage import LakeSlice

# Session features, as the snapshots carry them and the training set copies them.
from streaming_jobs.session_state import FEATURE_NAMES


@asset_check(asset="session_snapshots", name="feature_drift", partitions_def=daily_partitions,
             additional_ins={"training_set": AssetIn()},
             description="PSI of every session feature of the day against the training set "
                         "(warn at 0.1, fail at 0.2).")
def feature_drift(context: AssetCheckExecutionContext, session_snapshots: LakeSlice,
                  training_set: LakeSlice) -> AssetCheckResult:
    current = session_snapshots.pandas()
    reference = training_set.pandas()
    table = feature_psi(reference, current, FEATURE_NAMES)
    reason = ("no snapshots for the day" if current.empty else
              "the training set is empty" if reference.empty else
              "no session feature in both tables" if table.empty else None)
    if reason:  # nothing was compared: a warning that says so, never a pass
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN,
                                metadata={"status": "no data", "reason": reason,
                                          "rows": len(current)})
    status = worst_status(table["status"])
    return AssetCheckResult(
        passed=status != "alert",
        severity=AssetCheckSeverity.WARN if status != "alert" else AssetCheckSeverity.ERROR,
        metadata={"status": status, "max_psi": max_judged_psi(table),
                  "features_warn": int((table["status"] == "warn").sum()),
                  "features_alert": int((table["status"] == "alert").sum()),
                  "rows": len(current),
                  "psi": MetadataValue.md(table.round(4).to_markdown(index=False))})
