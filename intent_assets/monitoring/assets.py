"""Monitoring assets: the day's session anomalies and the day's served scores against reality."""

import json

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from intent_assets.monitoring.alerting import findings_alert
from intent_assets.monitoring.anomalies import detect_anomalies
from intent_assets.features.feast_ops import build_training_set
from intent_assets.ingest.source import arrived_events
from intent_assets.monitoring.consistency import (
    compare,
    entity_frame,
    event_days,
    examples,
    late_events,
    logged_requests,
    mismatch_verdict,
    offline_session_features,
)
from intent_assets.monitoring.checks import SERVED_FEATURE_DRIFT, no_data, served_feature_drift
from intent_assets.monitoring.drift import max_judged_psi, worst_status
from intent_assets.monitoring.performance import (
    labelled_scores,
    performance_decay,
    score_distribution,
    served_scores as model_scores,
)
from intent_assets.partitions import daily, daily_partitions, last_30_days, served_days
from intent_assets.tables import record_row_counts, schema_metadata
from intent_resources.alerts import AlertsResource
from intent_resources.clickstream import ClickstreamSource
from intent_resources.feast import FeastResource
from intent_resources.decision_log import DecisionLogReader
from intent_resources.storage import ArtifactStore, LakeSlice, LakeStorage
from streaming_jobs.feature_spec import DEFAULT_SERVICE, service_features

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


def served_reference(models: ArtifactStore, version: str) -> tuple[np.ndarray, dict] | None:
    """A served model version's test predictions and test metrics, as `calibrated_model` wrote
    them (looked up by the version, never "the latest"); None when they are not there."""
    predictions = models.fetch("artifacts", f"{version}_test_predictions.parquet")
    manifest = models.fetch("artifacts", version, "manifest.json")
    if predictions is None or manifest is None:
        return None
    metrics = (json.loads(manifest.read_text()).get("metrics") or {}).get("test") or {}
    return pd.read_parquet(predictions)["probability"].to_numpy(), metrics


@asset(group_name=GROUP, partitions_def=daily_partitions, kinds={"pandas", "parquet"},
       metadata=schema_metadata("served_scores"),
       ins={"sessions": AssetIn()}, deps=["decision_log", "calibrated_model"],
       check_specs=[AssetCheckSpec("score_distribution", asset="served_scores",
                                   description="PSI of served probabilities vs the test "
                                               "predictions of the model version that served them."),
                    AssetCheckSpec("performance_vs_test", asset="served_scores",
                                   description="Live PR-AUC, log loss and ECE once labels arrive, "
                                               "vs the serving model version's test metrics.")])
def served_scores(context: AssetExecutionContext, sessions: LakeSlice,
                  decision_log: DecisionLogReader, lake: LakeStorage,
                  models: ArtifactStore) -> MaterializeResult:
    """The day's scores as served, by the model versions that served them, with their labels.

    Read from the decision log; each version actually served is judged against its own test
    predictions and metrics. A day with nothing to judge warns and says why."""
    day = context.partition_key
    scores = model_scores(decision_log.read_day(day))
    versions = sorted(str(v) for v in scores["model_version"].dropna().unique())
    frame = sessions.pandas()
    labelled = labelled_scores(scores, frame) if len(scores) and len(frame) \
        else scores.assign(label=pd.Series(dtype="int64"))
    written = labelled if len(labelled) else scores
    lake.write(written, "served_scores", day)
    distributions, decays, unknown = [], [], []
    for version in versions:
        reference = served_reference(models, version)
        if reference is None:
            unknown.append(version)
            continue
        predictions, metrics = reference
        mine = scores[scores["model_version"] == version]
        distributions.append({"model_version": version,
                              **score_distribution(predictions, mine["probability"].to_numpy())})
        mine_labelled = labelled[labelled["model_version"] == version]
        if len(mine_labelled) and mine_labelled["label"].nunique() == 2:
            decays.append((version, performance_decay(mine_labelled, metrics)))
    checks = [_distribution_check(day, versions, distributions, unknown),
              _performance_check(day, versions, decays, len(labelled))]
    return MaterializeResult(
        metadata={"dagster/row_count": len(written), "served": len(scores),
                  "labelled": len(labelled), "served_versions": ", ".join(versions) or "none",
                  "path": MetadataValue.path(lake.uri("served_scores", day))},
        check_results=checks)


def _distribution_check(day: str, versions: list[str], distributions: list[dict],
                        unknown: list[str]) -> AssetCheckResult:
    if not versions:
        return no_data("score_distribution", f"no model scores in the decision log of {day}")
    if not distributions:
        return no_data("score_distribution",
                        f"no test predictions found for the served versions {unknown}")
    table = pd.DataFrame(distributions)
    status = worst_status(table["status"])
    return AssetCheckResult(
        check_name="score_distribution", passed=status != "alert",
        severity=AssetCheckSeverity.ERROR if status == "alert" else AssetCheckSeverity.WARN,
        metadata={"status": status, "max_psi": float(table["psi"].max()),
                  "served": int(table["served"].sum()), "versions": ", ".join(versions),
                  "versions_without_reference": ", ".join(unknown) or "none",
                  "by_version": MetadataValue.md(table.round(5).to_markdown(index=False))})


def _performance_check(day: str, versions: list[str], decays: list[tuple[str, dict]],
                       labelled: int) -> AssetCheckResult:
    if not decays:
        reason = (f"no model scores on {day}" if not versions else
                  f"{labelled} labelled scores: labels not arrived, one class only, or no "
                  "reference for the served versions")
        return no_data("performance_vs_test", reason)
    rows = [{"model_version": v, "rows": d["rows"], "decayed": d["decayed"],
             **{f"live_{k}": v2 for k, v2 in d["live"].items()},
             **{f"test_{k}": d["reference"].get(k) for k in d["live"]}} for v, d in decays]
    problems = [f"{v}: {p}" for v, d in decays for p in d["problems"]]
    return AssetCheckResult(
        check_name="performance_vs_test", passed=not problems, severity=AssetCheckSeverity.WARN,
        metadata={"rows": sum(d["rows"] for _, d in decays), "problems": "; ".join(problems) or "none",
                  "by_version": MetadataValue.md(pd.DataFrame(rows).round(5).to_markdown(index=False))})


class ConsistencyConfig(Config):
    """How much online/offline disagreement the consistency check tolerates, per feature, and
    how many served vectors a PSI needs to mean anything."""

    max_mismatch_rate: float = 0.01
    min_drift_rows: int = 200


@asset(group_name=GROUP, partitions_def=served_days, kinds={"feast", "pandas", "parquet"},
       metadata=schema_metadata("online_offline_consistency"),
       ins={"training_set": AssetIn()}, deps=["decision_log"],
       check_specs=[AssetCheckSpec("online_offline_mismatch", asset="online_offline_consistency",
                                   blocking=True,
                                   description="Per feature, the share of served vectors the "
                                               "offline path rebuilds differently (fails above "
                                               "max_mismatch_rate)."),
                    AssetCheckSpec(SERVED_FEATURE_DRIFT, asset="online_offline_consistency",
                                   description="The drift monitor: PSI of every feature of the "
                                               "served vectors against the training set (warn at "
                                               "0.1, fail at 0.2).")])
def online_offline_consistency(context: AssetExecutionContext, config: ConsistencyConfig,
                               training_set: LakeSlice, decision_log: DecisionLogReader,
                               feast: FeastResource, clickstream: ClickstreamSource,
                               lake: LakeStorage, models: ArtifactStore) -> MaterializeResult:
    """The feature vectors the API served, rebuilt offline: skew per feature, and drift vs training.

    The day's logged vectors (decision log) are rebuilt point in time at each request's as_of:
    session features by the state machine over the session's events, user and product features
    by Feast's join with the views' TTLs. Mismatch rate and mean absolute difference per feature;
    the served vectors' and served scores' PSI against the training set."""
    day = context.partition_key
    decisions = decision_log.read_day(day)
    scores = _served_score_psi(models, model_scores(decisions))
    requests = logged_requests(decisions)
    if requests.empty:
        reason = f"no logged feature vectors in the decision log of {day}"
        return MaterializeResult(metadata={"dagster/row_count": 0, "requests": 0, "status": reason,
                                           **scores}, check_results=[
            no_data("online_offline_mismatch", reason), no_data(SERVED_FEATURE_DRIFT, reason)])
    services = sorted(set(requests["feature_service"].dropna()))
    features = [spec.name for s in services for spec in service_features(s)]
    features = list(dict.fromkeys(features))
    events = pd.concat([arrived_events(clickstream, d, lake) for d in event_days(requests)],
                       ignore_index=True)
    session = offline_session_features(events, requests)
    offline = build_training_set(feast, entity_frame(requests, session),
                                 services[0] if services else DEFAULT_SERVICE)
    served = requests["features"].tolist()
    late = late_events(events, requests)
    table = compare(served, offline, features, late)
    worst = float(table["mismatch_rate"].max())
    by_view = table.groupby("view")["mismatch_rate"].max().round(5).to_dict()
    # the implementation's own skew: mismatches among requests whose events had all arrived
    skew_by_view = {view: None if pd.isna(rate) else rate for view, rate in
                    table.groupby("view")["mismatch_rate_all_arrived"].max().round(5).items()}
    skewed, late_only = mismatch_verdict(table, config.max_mismatch_rate)
    mismatch = AssetCheckResult(
        check_name="online_offline_mismatch", passed=not skewed and not late_only,
        severity=AssetCheckSeverity.ERROR if skewed else AssetCheckSeverity.WARN,
        metadata={"requests": len(requests), "max_mismatch_rate": worst,
                  "threshold": config.max_mismatch_rate,
                  "features_over_threshold": ", ".join(skewed) or "none",
                  "features_over_threshold_from_late_data": ", ".join(late_only) or "none",
                  "requests_with_late_events": sum(n > 0 for n in late),
                  "max_mismatch_rate_by_view": MetadataValue.json(by_view),
                  "max_mismatch_rate_all_arrived_by_view": MetadataValue.json(skew_by_view)})
    drift_check, drift = served_feature_drift(training_set.pandas(), pd.DataFrame(served),
                                              features, config.min_drift_rows)
    lake.write(table.assign(day=day), "online_offline_consistency", day)
    diffs = examples(served, offline, requests, features)
    return MaterializeResult(
        metadata={"dagster/row_count": len(table), "requests": len(requests),
                  "max_mismatch_rate": worst,
                  "max_mismatch_rate_by_view": MetadataValue.json(by_view),
                  "requests_with_late_events": sum(n > 0 for n in late),
                  "max_mismatch_rate_all_arrived_by_view": MetadataValue.json(skew_by_view),
                  "served_feature_max_psi": max_judged_psi(drift),
                  **scores,
                  "consistency": MetadataValue.md(table.round(6).to_markdown(index=False)),
                  "served_vs_training_psi": MetadataValue.md(drift.round(4).to_markdown(index=False)),
                  "mismatch_examples": MetadataValue.md(diffs.to_markdown(index=False)
                                                        if len(diffs) else "None."),
                  "path": MetadataValue.path(lake.uri("online_offline_consistency", day))},
        check_results=[mismatch, drift_check])


def _served_score_psi(models: ArtifactStore, scores: pd.DataFrame) -> dict:
    """Metadata: PSI of the day's served scores against each serving version's test predictions."""
    rows = []
    for version in sorted(str(v) for v in scores["model_version"].dropna().unique()):
        reference = served_reference(models, version)
        mine = scores[scores["model_version"] == version]["probability"].to_numpy()
        if reference is None:
            rows.append({"model_version": version, "served": len(mine), "psi": None,
                         "status": "no test predictions for this version"})
        else:
            dist = score_distribution(reference[0], mine)
            rows.append({"model_version": version, **dist})
    if not rows:
        return {"served_score_psi": "no model scores served"}
    return {"served_score_psi": MetadataValue.md(pd.DataFrame(rows).round(5).to_markdown(index=False))}
