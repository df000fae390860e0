"""Monitoring: PSI, anomaly detection, performance decay, alerts (file and SNS), on-call sensor."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from intent_assets.monitoring.anomalies import detect_anomalies
from intent_assets.monitoring.drift import feature_psi, psi, psi_status, worst_status
from intent_assets.monitoring.performance import (
    labelled_scores,
    performance_decay,
    score_distribution,
    served_scores,
)
from intent_resources.alerts import AlertsResource

DAYS = [f"2026-11-{d:02d}" for d in range(1, 9)]
TODAY = DAYS[-1]


# -- PSI ------------------------------------------------------------------------------------------
def test_psi_is_near_zero_for_the_same_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 20_000)
    assert psi(reference, rng.normal(0, 1, 20_000)) < 0.01
    moderate = psi(reference, rng.normal(0.4, 1, 20_000))
    major = psi(reference, rng.normal(1.0, 1, 20_000))
    assert 0.1 <= moderate < 0.2 <= major
    assert [psi_status(v) for v in (0.05, moderate, major)] == ["ok", "warn", "alert"]


def test_psi_handles_categories_counts_and_nulls():
    reference = pd.Series(["mobile"] * 600 + ["desktop"] * 400)
    assert psi(reference, reference.sample(frac=1, random_state=1)) == pytest.approx(0.0, abs=1e-12)
    assert psi_status(psi(reference, pd.Series(["mobile"] * 950 + ["desktop"] * 50))) == "alert"
    # A category the reference never saw counts as drift, not as an error.
    assert psi(reference, pd.Series(["mobile"] * 500 + ["tablet"] * 500)) > 0.2
    counts = pd.Series(np.arange(1000) % 4)
    with_nulls = pd.Series([np.nan] * 300 + list(np.arange(700) % 4))
    assert psi_status(psi(counts, with_nulls)) == "alert"


def test_feature_psi_ranks_the_drifted_feature_first():
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"a": rng.normal(0, 1, 5000), "b": rng.poisson(3, 5000),
                              "c": rng.choice(["x", "y"], 5000)})
    current = reference.assign(b=rng.poisson(6, 5000))
    table = feature_psi(reference, current, ["a", "b", "c", "not_there"])
    assert list(table["feature"]) [0] == "b"
    assert set(table["feature"]) == {"a", "b", "c"}
    assert worst_status(table["status"]) == "alert"
    assert table.set_index("feature").loc["a", "status"] == "ok"



def test_calendar_features_are_shown_but_judged_by_no_drift_check():
    """One morning's traffic has one weekday and a few hours: that is when, not drift."""
    from intent_assets.monitoring.drift import max_judged_psi

    rng = np.random.default_rng(2)
    reference = pd.DataFrame({"session_weekday": rng.integers(0, 7, 5000),
                              "session_hour": rng.integers(0, 24, 5000),
                              "session_n_events": rng.poisson(4, 5000)})
    morning = reference.assign(session_weekday=3, session_hour=rng.integers(8, 10, 5000))
    table = feature_psi(reference, morning, list(reference.columns)).set_index("feature")
    assert table.loc["session_weekday", "psi"] > 1 and table.loc["session_hour", "psi"] > 1
    assert table.loc["session_weekday", "status"] == "calendar"
    assert worst_status(table["status"]) == "ok"
    assert max_judged_psi(table.reset_index()) == table.loc["session_n_events", "psi"]
    drifted = morning.assign(session_n_events=rng.poisson(9, 5000))
    assert worst_status(feature_psi(reference, drifted, list(reference.columns))["status"]) \
        == "alert"

# -- anomalies ------------------------------------------------------------------------------------
def make_sessions(day: str, n: int, rng: np.random.Generator, conversion: float = 0.08,
                  views: float = 4.0) -> pd.DataFrame:
    duration = rng.gamma(2.0, 150.0, n)
    n_views = rng.poisson(views, n)
    return pd.DataFrame({
        "session_id": [f"{day}-{i}" for i in range(n)], "user_id": [f"u{i % 3000}" for i in range(n)],
        "device": rng.choice(["mobile", "desktop"], n, p=[0.6, 0.4]),
        "country": rng.choice(["DE", "FR", "US"], n, p=[0.5, 0.3, 0.2]),
        "traffic_source": rng.choice(["organic", "paid"], n), "duration_s": duration,
        "n_views": n_views, "n_events": n_views + rng.poisson(2, n), "n_purchases": 0,
        "label": (rng.random(n) < conversion).astype(int), "is_bot": False, "date": day})


@pytest.fixture
def history() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.concat([make_sessions(d, 4000, rng) for d in DAYS[:-1]], ignore_index=True)


def test_a_normal_day_raises_no_findings(history):
    today = make_sessions(TODAY, 4000, np.random.default_rng(99))
    findings = detect_anomalies(today, history)
    assert findings.empty, findings


def test_traffic_drop_in_one_segment_is_found(history):
    today = make_sessions(TODAY, 4000, np.random.default_rng(99))
    today = today[~((today["device"] == "mobile") & (np.arange(len(today)) % 5 != 0))]
    findings = detect_anomalies(today, history)
    drops = findings[findings["kind"] == "traffic_drop"]
    assert ("device", "mobile") in set(zip(drops["segment"], drops["value"]))
    assert "desktop" not in set(drops["value"])


def test_conversion_and_engagement_drops_are_found_by_segment(history):
    rng = np.random.default_rng(99)
    today = make_sessions(TODAY, 4000, rng)
    us = today["country"] == "US"
    today.loc[us, "label"] = (rng.random(us.sum()) < 0.01).astype(int)
    today.loc[us, "n_views"] = rng.poisson(1.5, us.sum())
    findings = detect_anomalies(today, history)
    found = set(zip(findings["kind"], findings["segment"], findings["value"]))
    assert ("conversion_drop", "country", "US") in found
    assert ("engagement_drop", "country", "US") in found
    assert not any(v == "DE" for _, _, v in found)


def test_bot_and_fraud_like_sessions_are_found(history):
    rng = np.random.default_rng(99)
    today = make_sessions(TODAY, 4000, rng)
    burst = make_sessions(TODAY, 300, rng).assign(
        user_id="scraper-1", duration_s=30.0, n_events=200, n_views=190)
    fraud = make_sessions(TODAY, 50, rng).assign(user_id="card-tester", n_purchases=5, duration_s=60.0)
    findings = detect_anomalies(pd.concat([today, burst, fraud], ignore_index=True), history)
    bots = findings[findings["kind"] == "bot_like_sessions"]
    assert len(bots) == 1 and bots.iloc[0]["severity"] == "alert"
    assert "scraper-1" in bots.iloc[0]["detail"] and "card-tester" in bots.iloc[0]["detail"]


# -- served scores and performance decay --------------------------------------------------------
def scored_day(rng: np.random.Generator, n_sessions: int = 4000):
    truth = rng.beta(1, 8, n_sessions)
    sessions = pd.DataFrame({"session_id": [f"s{i}" for i in range(n_sessions)],
                             "label": (rng.random(n_sessions) < truth).astype(int), "is_bot": False})
    per_session = rng.integers(1, 4, n_sessions)
    idx = np.repeat(np.arange(n_sessions), per_session)
    decisions = pd.DataFrame({"ts": pd.Timestamp(TODAY, tz="UTC").isoformat(),
                              "session_id": sessions["session_id"].to_numpy()[idx],
                              "probability": truth[idx], "model_version": "v1",
                              "fallback": [[] for _ in idx]})
    return truth, sessions, decisions


def test_calibrated_scores_do_not_decay_and_shuffled_scores_do():
    rng = np.random.default_rng(3)
    truth, sessions, decisions = scored_day(rng)
    # The model's test metrics: the same scorer on another (held-out) sample.
    _, test_sessions, test_decisions = scored_day(np.random.default_rng(30))
    reference = performance_decay(labelled_scores(served_scores(test_decisions), test_sessions), {})["live"]
    labelled = labelled_scores(served_scores(decisions), sessions)
    assert labelled.groupby("session_id")["weight"].sum().round(9).eq(1).all()
    good = performance_decay(labelled, reference)
    assert not good["decayed"], good["problems"]
    shuffled = labelled.assign(probability=rng.permutation(labelled["probability"].to_numpy()))
    bad = performance_decay(shuffled, reference)
    assert bad["decayed"] and any("PR-AUC" in p for p in bad["problems"])
    assert score_distribution(truth, labelled["probability"].to_numpy())["status"] == "ok"
    assert score_distribution(truth, np.clip(labelled["probability"] * 3, 0, 1))["status"] == "alert"


def test_fallback_answers_are_not_the_models_scores():
    _, _, decisions = scored_day(np.random.default_rng(4), 100)
    decisions.loc[:9, "fallback"] = pd.Series([["redis_timeout"]] * 10)
    assert len(served_scores(decisions)) == len(decisions) - 10


# -- alerts ---------------------------------------------------------------------------------------
def test_local_alerts_append_json_lines(tmp_path):
    alerts = AlertsResource(jsonl_path=str(tmp_path / "alerts.jsonl"))
    alerts.send("first", {"run_id": "r1"})
    alerts.send("second", {"run_id": "r2"}, severity="warn")
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [(x["subject"], x["run_id"], x["severity"]) for x in lines] == [
        ("first", "r1", "error"), ("second", "r2", "warn")]


def test_alerts_are_counted_for_prometheus_across_resources(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    path = tmp_path / "metrics" / "alerts.prom"
    for _ in range(2):  # a new resource per run, as Dagster builds them: the count carries on
        AlertsResource(metrics_path=str(path)).send(
            "session_anomalies 2026-12-06: traffic_drop",
            {"kind": "monitoring", "asset": "session_anomalies", "findings": []})
    counts = {tuple(sorted(s.labels.items())): s.value
              for f in text_string_to_metric_families(path.read_text()) for s in f.samples}
    assert counts == {(("asset", "session_anomalies"), ("kind", "monitoring"),
                       ("severity", "error")): 2.0}


def test_sns_alert_reaches_a_subscribed_queue(moto_endpoint):
    import boto3

    sns = boto3.client("sns", endpoint_url=moto_endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    topic = sns.create_topic(Name="intent-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="oncall")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    alerts = AlertsResource(topic_arn=topic, endpoint_url=moto_endpoint)
    sent = alerts.send("Dagster run failed: nightly_features_job at sessions", {"run_id": "abc123"})
    assert sent["sns_message_id"]
    messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2).get("Messages", [])
    assert len(messages) == 1
    envelope = json.loads(messages[0]["Body"])
    assert envelope["Subject"].startswith("Dagster run failed")
    assert json.loads(envelope["Message"])["run_id"] == "abc123"


# -- on-call sensor -------------------------------------------------------------------------------
def test_run_failure_sensor_alerts_with_run_step_and_link(tmp_path):
    from dagster import (
        DagsterEventType,
        DagsterInstance,
        asset,
        build_run_status_sensor_context,
        define_asset_job,
        Definitions,
    )

    from intent_assets.monitoring.sensors import run_failure_alert_sensor

    @asset
    def broken_asset() -> None:
        raise RuntimeError("lake unreachable")

    instance = DagsterInstance.ephemeral()
    job = Definitions(assets=[broken_asset], jobs=[define_asset_job("broken_job")]).resolve_job_def("broken_job")
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE))
    alerts = AlertsResource(jsonl_path=str(tmp_path / "alerts.jsonl"), ui_base_url="http://127.0.0.1:3999")
    context = build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor", dagster_event=failure.dagster_event,
        dagster_instance=instance, dagster_run=result.dagster_run,
        resources={"alerts": alerts}).for_run_failure()
    run_failure_alert_sensor(context)
    alert = json.loads((tmp_path / "alerts.jsonl").read_text().splitlines()[-1])
    assert alert["run_id"] == result.run_id
    assert alert["failed_steps"] == ["broken_asset"]
    assert alert["run_url"] == f"http://127.0.0.1:3999/runs/{result.run_id}"
    assert alert["job"] == "broken_job"


# -- assets and checks in-process -----------------------------------------------------------------
def test_session_anomalies_asset_writes_findings_and_alerts(lake, tmp_path, history):
    from dagster import AssetSpec, materialize

    from intent_assets.monitoring.assets import session_anomalies
    from intent_assets.partitions import daily_partitions
    from intent_resources.storage import LakeIOManager

    rng = np.random.default_rng(99)
    today = make_sessions(TODAY, 4000, rng)
    bots = make_sessions(TODAY, 300, rng).assign(user_id="scraper-1", duration_s=30.0, n_events=200)
    for day, frame in history.groupby("date"):
        lake.write(frame.drop(columns="date"), "sessions", day)
    lake.write(pd.concat([today, bots]).drop(columns="date"), "sessions", TODAY)
    alerts = AlertsResource(jsonl_path=str(tmp_path / "alerts.jsonl"))
    result = materialize([session_anomalies, AssetSpec("sessions", partitions_def=daily_partitions)],
                         partition_key=TODAY, selection=[session_anomalies],
                         resources={"lake": lake, "alerts": alerts, "io_manager": LakeIOManager(lake=lake)})
    assert result.success
    meta = result.asset_materializations_for_node("session_anomalies")[0].metadata
    assert meta["baseline_days"].value == len(DAYS) - 1
    assert "bot_like_sessions" in meta["kinds"].value
    written = lake.read("session_anomalies", [TODAY])
    assert "bot_like_sessions" in set(written["kind"])
    schema = session_anomalies.specs_by_key[session_anomalies.key].metadata["dagster/column_schema"]
    assert list(written.columns) == [c.name for c in schema.columns]
    assert meta["dagster/row_count"].value == len(written)
    alert = json.loads((tmp_path / "alerts.jsonl").read_text().splitlines()[-1])
    assert alert["asset"] == "session_anomalies" and alert["partition"] == TODAY
    assert any(f["kind"] == "bot_like_sessions" for f in alert["findings"])


def test_served_feature_drift_fails_on_drifted_served_vectors_and_passes_on_the_same():
    from intent_assets.monitoring.checks import served_feature_drift

    rng = np.random.default_rng(2)
    n = 3000

    def vectors(events_mean: float) -> pd.DataFrame:
        return pd.DataFrame({"session_n_events": rng.poisson(events_mean, n),
                             "session_duration_s": rng.gamma(2, 100, n),
                             "session_device": rng.choice(["mobile", "desktop"], n)})

    training = vectors(8).assign(label=0)
    features = ["session_n_events", "session_duration_s", "session_device"]
    same, _ = served_feature_drift(training, vectors(8), features, min_rows=200)
    assert (same.passed, same.metadata["status"].value) == (True, "ok")
    # the API served sessions twice as long as any the model learned from
    drifted, table = served_feature_drift(training, vectors(16), features, min_rows=200)
    assert (drifted.passed, drifted.severity.value, drifted.metadata["status"].value) == \
        (False, "ERROR", "alert")
    assert table["feature"].iloc[0] == "session_n_events"


def test_served_feature_drift_warns_with_the_reason_when_there_is_nothing_to_judge():
    from intent_assets.monitoring.checks import served_feature_drift

    training = pd.DataFrame({"session_n_events": range(500), "label": 0})
    served = pd.DataFrame({"session_n_events": range(300)})
    cases = {"too few": (training, served.head(10), "10 served vectors, 200 needed for a PSI"),
             "no training": (training.head(0), served, "the training set is empty"),
             "no feature": (training[["label"]], served,
                            "no served feature is in the training set")}
    for name, (reference, vectors, reason) in cases.items():
        result, _ = served_feature_drift(reference, vectors, ["session_n_events"], min_rows=200)
        assert not result.passed and result.severity.value == "WARN", name
        assert result.metadata["status"].value == "no data", name
        assert result.metadata["reason"].value == reason, name


def _run_served_scores(lake, tmp_path, decisions: pd.DataFrame | None, sessions: pd.DataFrame,
                       references: dict[str, tuple[pd.DataFrame, dict]], latest: str):
    """served_scores for TODAY over `decisions` (None: nothing served), with the test
    predictions and metrics of each version in `references` where calibrated_model writes them,
    after a calibrated_model run whose latest version is `latest`."""
    from dagster import AssetSpec, DagsterInstance, Definitions, FilesystemIOManager, asset, define_asset_job

    from intent_assets.monitoring.assets import served_scores as served_scores_asset
    from intent_assets.partitions import daily_partitions
    from intent_resources.decision_log import DecisionLogReader
    from intent_resources.storage import ArtifactStore, LakeIOManager

    lake.write(sessions, "sessions", TODAY)
    log_dir = tmp_path / "decisions" / f"date={TODAY}"
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "decisions-1.jsonl").open("w") as out:
        for record in ([] if decisions is None else decisions.to_dict("records")):
            out.write(json.dumps(record) + "\n")
        out.write('{"torn": ')  # a writer killed mid-line
    models = ArtifactStore(root=str(tmp_path / "models"))
    for version, (predictions, metrics) in references.items():
        predictions.to_parquet(models.directory("artifacts") / f"{version}_test_predictions.parquet")
        (models.directory("artifacts", version) / "manifest.json").write_text(
            json.dumps({"version": version, "metrics": {"test": metrics}}))

    # Stands in for the training chain's asset: its latest version need not be the served one.
    @asset(key="calibrated_model", io_manager_key="model_io_manager")
    def calibrated_model() -> dict:
        return {"version": latest}

    defs = Definitions(
        assets=[calibrated_model, served_scores_asset, AssetSpec("sessions", partitions_def=daily_partitions)],
        resources={"lake": lake, "io_manager": LakeIOManager(lake=lake), "models": models,
                   "model_io_manager": FilesystemIOManager(base_dir=str(tmp_path / "storage")),
                   "decision_log": DecisionLogReader(directory=str(tmp_path / "decisions"))},
        jobs=[define_asset_job("model", selection=["calibrated_model"]),
              define_asset_job("scores", selection=["served_scores"], partitions_def=daily_partitions)])
    instance = DagsterInstance.ephemeral()
    assert defs.resolve_job_def("model").execute_in_process(instance=instance).success
    result = defs.resolve_job_def("scores").execute_in_process(instance=instance, partition_key=TODAY)
    assert result.success
    return result, {e.event_specific_data.check_name: e.event_specific_data for e in result.all_events
                    if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def test_served_scores_judges_the_versions_that_served_not_the_latest_model(lake, tmp_path):
    rng = np.random.default_rng(8)
    truth, sessions, decisions = scored_day(rng)
    _, test_sessions, test_decisions = scored_day(np.random.default_rng(80))
    reference = performance_decay(labelled_scores(served_scores(test_decisions), test_sessions), {})["live"]
    # v1 served the day; v2, the latest calibrated_model (say rejected at its gates), served nothing
    result, evaluations = _run_served_scores(
        lake, tmp_path, decisions, sessions,
        {"v1": (test_decisions[["probability"]], reference),
         "v2": (test_decisions[["probability"]].assign(probability=0.9), reference)}, latest="v2")
    meta = result.asset_materializations_for_node("served_scores")[0].metadata
    assert meta["served_versions"].value == "v1"
    assert evaluations["score_distribution"].passed
    assert evaluations["score_distribution"].metadata["versions"].value == "v1"
    assert evaluations["performance_vs_test"].passed
    assert evaluations["performance_vs_test"].metadata["rows"].value == len(decisions)
    written = lake.read("served_scores", [TODAY])
    assert len(written) == len(decisions)
    from intent_assets.monitoring.assets import served_scores as served_scores_asset

    schema = served_scores_asset.specs_by_key[served_scores_asset.key].metadata[
        "dagster/column_schema"]
    assert list(written.columns) == [c.name for c in schema.columns]
    [materialization] = result.asset_materializations_for_node("served_scores")
    assert materialization.metadata["dagster/row_count"].value == len(written)


def test_served_scores_checks_warn_with_the_reason_when_there_is_nothing_to_judge(lake, tmp_path):
    _, sessions, decisions = scored_day(np.random.default_rng(9), 200)
    _, evaluations = _run_served_scores(lake, tmp_path, None, sessions, {}, latest="v1")
    for name in ("score_distribution", "performance_vs_test"):
        assert not evaluations[name].passed, name
        assert evaluations[name].severity.value == "WARN"
        assert evaluations[name].metadata["status"].value == "no data"
    assert "no model scores" in evaluations["score_distribution"].metadata["reason"].value
    # served, but by a version whose test predictions are nowhere: not a pass either
    _, evaluations = _run_served_scores(lake, tmp_path / "unknown", decisions, sessions, {},
                                        latest="v1")
    assert not evaluations["score_distribution"].passed
    assert "no test predictions found for the served versions ['v1']" in \
        evaluations["score_distribution"].metadata["reason"].value


def test_monitoring_and_experiments_load_with_the_whole_code_location(tmp_path, monkeypatch):
    from dagster import AssetKey, Definitions

    from intent_assets.definitions import build_definitions

    monkeypatch.setenv("INTENT_HOME", str(tmp_path))
    defs = build_definitions("local")
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("ab_readout")).group_name == "experiments"
    assert AssetKey("experiment_assignments") in graph.get(AssetKey("ab_readout")).parent_keys
    assert graph.get(AssetKey("session_anomalies")).parent_keys == {AssetKey("sessions")}
    assert graph.get(AssetKey("user_features")).freshness_policy is not None
    assert graph.get(AssetKey("calibrated_model")).freshness_policy is not None
    assert defs.resolve_asset_graph().get(AssetKey("session_anomalies")).automation_condition is not None
    assert defs.resolve_job_def("daily_reports_job").partitions_def is not None
    assert "run_failure_alert_sensor" in {s.name for s in defs.sensors}
    assert defs.resolve_job_def("nightly_features_job").partitions_def is not None


def test_consistency_warns_with_the_reason_when_no_vector_was_logged(lake, tmp_path):
    from dagster import AssetSpec, DagsterInstance, Definitions, define_asset_job

    from intent_assets.monitoring.assets import online_offline_consistency
    from intent_resources.clickstream import ClickstreamSource
    from intent_resources.decision_log import DecisionLogReader
    from intent_resources.feast import FeastResource
    from intent_resources.storage import ArtifactStore, LakeIOManager

    lake.write(pd.DataFrame({"session_n_events": [1, 2], "label": 0}), "training_set")
    # decisions were served, but with no feature vector logged (INTENT_LOG_FEATURES_RATE=0)
    log_dir = tmp_path / "decisions" / f"date={TODAY}"
    log_dir.mkdir(parents=True)
    (log_dir / "decisions-1.jsonl").write_text(json.dumps(
        {"ts": f"{TODAY}T10:00:00+00:00", "session_id": "s1", "probability": 0.2,
         "model_version": "v1", "fallback": []}) + "\n")
    defs = Definitions(
        assets=[online_offline_consistency, AssetSpec("training_set")],
        resources={"lake": lake, "io_manager": LakeIOManager(lake=lake),
                   "models": ArtifactStore(root=str(tmp_path / "models")),
                   "clickstream": ClickstreamSource(),
                   "feast": FeastResource(repo_path=str(tmp_path), env="local",
                                          redis_url="redis://127.0.0.1:1/0",
                                          lake_root=str(tmp_path / "lake"), home=str(tmp_path)),
                   "decision_log": DecisionLogReader(directory=str(tmp_path / "decisions"))},
        jobs=[define_asset_job("consistency", selection=["online_offline_consistency"])])
    result = defs.resolve_job_def("consistency").execute_in_process(
        instance=DagsterInstance.ephemeral(), partition_key=TODAY)
    assert result.success
    evaluations = {e.event_specific_data.check_name: e.event_specific_data for e in result.all_events
                   if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    for name in ("online_offline_mismatch", "served_feature_drift"):
        assert not evaluations[name].passed and evaluations[name].severity.value == "WARN"
        assert evaluations[name].metadata["reason"].value == \
            f"no logged feature vectors in the decision log of {TODAY}"
    meta = result.asset_materializations_for_node("online_offline_consistency")[0].metadata
    assert "no test predictions" in meta["served_score_psi"].value
