"""Monitoring assets: the day's session anomalies and the day's served scores against reality."""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    MaterializeResult,
    MetadataValue,
    asset,
)

from intent_assets.monitoring.alerting import findings_alert
from intent_assets.monitoring.anomalies import detect_anomalies
from intent_assets.monitoring.performance import (
    labelled_scores,
    performance_decay,
    score_distribution,
    served_scores as model_scores,
)
from intent_assets.partitions import daily, daily_partitions, last_30_days
from intent_assets.tables import record_row_counts, schema_metadata
from intent_resources.alerts import AlertsResource
from intent_resources.decision_log import DecisionLogReader
from intent_resources.storage import LakeSlice, LakeStorage

GROUP = "monitoring"


@asset(**daily(GROUP), ins={"sessions": AssetIn(partition_mapping=last_30_days)},
       kinds={"pandas", "parquet"}, metadata=schema_metadata("session_anomalies"))
def session_anomalies(context: AssetExecutionContext, sessions: LakeSlice, lake: LakeStorage,
                      alerts: AlertsResource) -> MaterializeResult:
    """The day's anomalies: bot- and fraud-like sessions, sudden drops by segment.

    Drops in traffic, engagement or conversion, each day against the 30 days before;
    alert-level findings are sent on."""
    frame = sessions.pandas()
    found: list[pd.DataFrame] = []
    urgent_total = 0
    for day in context.partition_keys:
        if frame.empty or day not in set(frame["date"]):
            raise ValueError(f"sessions of {day} are missing; materialize sessions for {day} first")
        today = frame[frame["date"] == day]
        history = frame[(frame["date"] < day)
                        & (frame["date"] >= str(pd.Timestamp(day) - pd.Timedelta(days=30))[:10])]
        findings = detect_anomalies(today, history)
        lake.write(findings, "session_anomalies", day)
        urgent = findings[findings["severity"] == "alert"]
        urgent_total += len(urgent)
        if len(urgent):
            alerts.send(*findings_alert("session_anomalies", day, urgent.to_dict("records")))
        found.append(findings.assign(day=day))
        baseline_days = int(history["date"].nunique())
    record_row_counts(context, dict(zip(context.partition_keys, map(len, found))))
    findings = pd.concat(found, ignore_index=True)
    return MaterializeResult(metadata={
        "findings": len(findings), "alerts": urgent_total, "days": len(context.partition_keys),
        "baseline_days": baseline_days,  # of the last day: how much history it was judged against
        "kinds": ", ".join(sorted(set(findings["kind"]))) or "none",
        "table": MetadataValue.md(findings.round(6).to_markdown(index=False) if len(findings)
                                  else "No anomalies."),
        "path": MetadataValue.path(lake.uri("session_anomalies")),
    })


@asset(group_name=GROUP, partitions_def=daily_partitions, kinds={"pandas", "parquet"},
       metadata=schema_metadata("served_scores"),
       ins={"calibrated_model": AssetIn(input_manager_key="model_io_manager"), "sessions": AssetIn()},
       deps=["decision_log"],
       check_specs=[AssetCheckSpec("score_distribution", asset="served_scores",
                                   description="PSI of served probabilities vs the model's test predictions."),
                    AssetCheckSpec("performance_vs_test", asset="served_scores",
                                   description="Live PR-AUC, log loss and ECE once labels arrive, "
                                               "vs the model's test metrics.")])
def served_scores(context: AssetExecutionContext, calibrated_model: dict, sessions: LakeSlice,
                  decision_log: DecisionLogReader, lake: LakeStorage) -> MaterializeResult:
    """The day's scores served by the current model, with their labels once sessions are built.

    Read from the decision log; the prediction-distribution and performance-decay checks
    judge them against the model's test predictions."""
    day = context.partition_key
    scores = model_scores(decision_log.read_day(day))
    version = calibrated_model["version"]
    current = scores[scores["model_version"] == version]
    labelled = labelled_scores(current, sessions.pandas()) if len(current) else current.assign(label=[])
    written = labelled if len(labelled) else current
    lake.write(written, "served_scores", day)
    reference = pd.read_parquet(calibrated_model["test_predictions"])["probability"].to_numpy()
    checks = []
    if len(current):
        dist = score_distribution(reference, current["probability"].to_numpy())
        checks.append(AssetCheckResult(
            check_name="score_distribution", passed=dist["status"] != "alert",
            severity=AssetCheckSeverity.WARN if dist["status"] != "alert" else AssetCheckSeverity.ERROR,
            metadata={k: v for k, v in dist.items()}))
    else:
        checks.append(AssetCheckResult(check_name="score_distribution", passed=True,
                                       severity=AssetCheckSeverity.WARN,
                                       metadata={"status": f"no scores served by {version} on {day}"}))
    if len(labelled) and labelled["label"].nunique() == 2:
        decay = performance_decay(labelled, calibrated_model["metrics"])
        checks.append(AssetCheckResult(
            check_name="performance_vs_test", passed=not decay["decayed"],
            severity=AssetCheckSeverity.WARN,
            metadata={"rows": decay["rows"], "problems": "; ".join(decay["problems"]) or "none",
                      **{f"live_{k}": v for k, v in decay["live"].items() if v is not None},
                      **{f"test_{k}": v for k, v in decay["reference"].items()
                         if k in decay["live"] and v is not None}}))
    else:
        checks.append(AssetCheckResult(check_name="performance_vs_test", passed=True,
                                       severity=AssetCheckSeverity.WARN,
                                       metadata={"status": "labels not arrived (or one class only)"}))
    return MaterializeResult(
        metadata={"dagster/row_count": len(written), "served": len(scores),
                  "by_current_model": len(current), "labelled": len(labelled),
                  "model_version": version, "path": MetadataValue.path(lake.uri("served_scores", day))},
        check_results=checks)
