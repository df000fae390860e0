"""The whole code location loads, and its asset graph is the one the README describes."""

from pathlib import Path

from dagster import AssetKey

from intent_assets.definitions import build_definitions


def test_definitions_load_with_the_expected_graph():
    defs = build_definitions("local")
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"raw_clickstream", "orders", "sessions", "user_features", "product_features",
                    "session_snapshots", "online_features", "training_set", "tuned_model",
                    "rules_baseline", "logistic_baseline", "challenger_models", "calibrated_model",
                    "reliability_report",
                    "published_model", "batch_scores", "session_features_stream",
                    "experiment_assignments", "experiment_exposures", "experiment_orders",
                    "ab_readout", "session_anomalies", "served_scores", "decision_log",
                    "online_offline_consistency", "exploration_log", "uplift_model",
                    "offer_policy_readout", "upsell_preference"}

    def parents(name):
        return {k.to_user_string() for k in graph.get(AssetKey(name)).parent_keys}

    assert parents("sessions") == parents("orders") == {"raw_clickstream"}
    assert parents("uplift_model") == {"exploration_log"}
    assert parents("offer_policy_readout") == {"uplift_model"}
    assert parents("user_features") == {"orders", "sessions", "raw_clickstream"}
    assert parents("product_features") == {"raw_clickstream", "sessions"}
    assert parents("session_snapshots") == {"raw_clickstream", "sessions"}
    assert parents("online_features") == {"user_features", "product_features"}
    assert parents("training_set") == {"session_snapshots", "user_features", "product_features"}
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups["raw_clickstream"] == groups["orders"] == groups["sessions"] == "ingest"
    features = {"user_features", "product_features", "session_snapshots", "online_features",
                "training_set"}
    assert {groups[k] for k in features} == {"features"}
    training = {"tuned_model", "rules_baseline", "logistic_baseline", "challenger_models",
                "calibrated_model"}
    assert {groups[k] for k in training} == {"training"} and groups["reliability_report"] == "reports"
    assert parents("tuned_model") == {"training_set"}
    assert parents("challenger_models") == {"tuned_model", "training_set"}
    assert parents("calibrated_model") == {"tuned_model", "challenger_models", "training_set",
                                           "logistic_baseline"}
    assert parents("reliability_report") == {"calibrated_model", "rules_baseline", "logistic_baseline"}
    gates = {c.name for c in graph.asset_check_keys if c.asset_key == AssetKey("calibrated_model")}
    assert gates == {"pr_auc_gate", "ece_gate", "beats_logistic_gate", "no_leakage_gate"}
    assert all(graph.get_check_spec(c).blocking for c in graph.asset_check_keys
               if c.asset_key == AssetKey("calibrated_model"))
    assert {s.name for s in defs.schedules} >= {"retrain_job_schedule"}
    assert parents("published_model") == {"calibrated_model"}
    assert parents("batch_scores") == {"published_model", "session_snapshots", "user_features",
                                       "product_features"}
    assert {s.name for s in defs.sensors} == {"model_publication_sensor",
                                              "streaming_supervisor_sensor",
                                              "run_failure_alert_sensor",
                                              "live_anomaly_sensor",
                                              "automation_condition_sensor"}
    # the weekly retrain is scheduled; the nightly chain is automated (test_automation.py)
    assert {s.name for s in defs.schedules} == {"retrain_job_schedule"}
    assert parents("ab_readout") == {"experiment_assignments", "experiment_exposures",
                                     "experiment_orders"}
    # a live experiment reads the API's decision log and the orders built from the clickstream
    assert parents("experiment_exposures") == {"decision_log", "orders"}
    assert parents("experiment_orders") == {"orders"}
    assert "decision_log" in parents("served_scores")
    assert parents("online_offline_consistency") == {"decision_log", "training_set"}
    assert parents("session_anomalies") == {"sessions"}
    assert groups["session_features_stream"] == "streaming"
    # every daily asset backfills a range in one run
    for key in features - {"training_set"} | {"raw_clickstream", "orders", "sessions"}:
        node = graph.get(AssetKey(key))
        assert node.partitions_def is not None and node.backfill_policy.max_partitions_per_run is None, key
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert {("raw_clickstream", "contract_violations"), ("raw_clickstream", "unique_event_ids"),
            ("orders", "orders_reconcile_with_purchases"),
            ("sessions", "label_rate_within_bounds")} <= checks


def test_every_asset_is_catalogued():
    """Kinds, an owning team, a domain tag, a description and a link to the defining code."""
    defs = build_definitions("local")
    specs = list(defs.resolve_all_asset_specs())
    assert len(specs) == 29
    for spec in specs:
        name = spec.key.to_user_string()
        assert spec.kinds, name
        assert spec.owners and all(o.startswith("team:") for o in spec.owners), name
        assert spec.tags.get("domain") == spec.group_name, name
        first_line = (spec.description or "").strip().splitlines()[0] if spec.description else ""
        assert 20 <= len(first_line) <= 100, (name, first_line)
        refs = spec.metadata["dagster/code_references"].code_references
        assert refs and all(Path(r.file_path).is_file() for r in refs), name
        assert any(name in Path(r.file_path).read_text() for r in refs), name
    kinds = {s.key.to_user_string(): s.kinds for s in specs}
    assert {"spark", "parquet"} <= kinds["sessions"] and {"feast", "redis"} <= kinds["online_features"]
    assert "lightgbm" in kinds["tuned_model"] and "sagemaker" in kinds["published_model"]


def test_table_assets_publish_their_column_schema_from_the_spec_and_the_contract():
    from streaming_jobs.contract import COLUMNS
    from streaming_jobs.feature_spec import FEATURE_DESCRIPTIONS, USER_FEATURES

    specs = {s.key.to_user_string(): s for s in build_definitions("local").resolve_all_asset_specs()}
    tables = ("raw_clickstream", "orders", "sessions", "user_features", "product_features",
              "session_snapshots", "training_set")
    schemas = {t: specs[t].metadata["dagster/column_schema"] for t in tables}
    for table, schema in schemas.items():
        assert schema.columns and all(c.type and c.description for c in schema.columns), table
    assert [c.name for c in schemas["raw_clickstream"].columns] == [*COLUMNS, "date"]
    user = {c.name: c for c in schemas["user_features"].columns}
    for name, _, _ in USER_FEATURES:
        assert user[name].description == FEATURE_DESCRIPTIONS[name]


def test_every_table_asset_publishes_a_column_schema_matching_what_it_writes():
    """Every asset stored as a lake table (kind `parquet`) has a typed, described column schema,
    and the schemas of the tables built by plain functions list exactly the columns they write."""
    import pandas as pd

    from intent_assets.experiments.simulator import ExperimentConfig, simulate_experiment
    from intent_assets.monitoring.anomalies import FINDING_COLUMNS
    from intent_assets.monitoring.performance import labelled_scores, served_scores
    from serving.batch import ID_COLUMNS, SCORE_COLUMNS

    specs = {s.key.to_user_string(): s for s in build_definitions("local").resolve_all_asset_specs()}
    tables = {name for name, spec in specs.items() if "parquet" in spec.kinds}
    assert tables >= {"batch_scores", "session_anomalies", "served_scores", "experiment_assignments",
                      "experiment_exposures", "experiment_orders", "sessions", "training_set"}
    columns = {}
    for table in tables:
        schema = specs[table].metadata.get("dagster/column_schema")
        assert schema is not None and schema.columns, f"{table} has no column schema"
        assert all(c.type and c.description for c in schema.columns), table
        columns[table] = [c.name for c in schema.columns]
        assert len(set(columns[table])) == len(columns[table]), table
    assert columns["batch_scores"] == [*ID_COLUMNS, *SCORE_COLUMNS]
    # day- and experiment-partitioned tables: the lake's `date=` partition column comes last
    assert columns["session_anomalies"] == [*FINDING_COLUMNS, "date"]
    decisions = pd.DataFrame({"ts": ["2026-12-06T10:00:00Z"], "session_id": ["s1"],
                              "probability": [0.4], "model_version": ["v1"], "fallback": [[]]})
    sessions = pd.DataFrame({"session_id": ["s1"], "label": [1], "is_bot": [False]})
    assert columns["served_scores"] == [*labelled_scores(served_scores(decisions),
                                                         sessions).columns, "date"]
    simulated = simulate_experiment(ExperimentConfig(n_users=200, seed=1))
    assert columns["experiment_assignments"] == [*simulated.assignments.columns, "variant_share",
                                                 "date"]
    assert columns["experiment_exposures"] == [*simulated.exposures.columns, "date"]
    assert columns["experiment_orders"] == [*simulated.orders.columns, "date"]
    from intent_assets.uplift.simulator import exploration_log

    assert columns["exploration_log"] == list(exploration_log(50, seed=1).columns)
    from intent_assets.monitoring.consistency import compare

    assert columns["online_offline_consistency"] == [
        *compare([{"f": 1.0}], pd.DataFrame({"f": [1.0]}), ["f"]).columns, "day", "date"]


def test_code_references_link_to_git_when_the_repository_is_given():
    from intent_assets.catalog import with_code_references
    from intent_assets.ingest.assets import sessions

    [linked] = with_code_references([sessions], "https://github.com/acme/intent", "main")
    [ref] = linked.specs_by_key[sessions.key].metadata["dagster/code_references"].code_references
    assert ref.url.startswith("https://github.com/acme/intent/tree/main/intent_assets/ingest/assets.py#L")


def test_prod_definitions_take_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("INTENT_LAKE_URI", "s3://intent-lake/prod")
    monkeypatch.setenv("INTENT_ORACLE_URI", "s3://intent-lake/oracle")
    monkeypatch.setenv("REDIS_URL", "redis://elasticache:6379/0")
    defs = build_definitions("prod")
    monkeypatch.setenv("INTENT_FEAST_REGISTRY", "s3://intent-lake/feast/registry.db")
    assert set(defs.resources) >= {"lake", "spark", "redis", "feast", "clickstream", "io_manager"}


def test_an_unknown_environment_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="unknown environment"):
        build_definitions("staging")
