"""The feature assets materialized in-process on small simulated data: real Spark, Redis, Feast."""

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

from intent_assets.features.assets import (
    online_features,
    product_features,
    session_snapshots,
    training_set,
    user_features,
)
from intent_assets.ingest.assets import orders, raw_clickstream, sessions
from intent_assets.reports import metrics
from intent_resources.clickstream import ClickstreamSource
from intent_resources.environments import feature_repo_path
from intent_resources.feast import FeastResource
from intent_resources.storage import LakeIOManager, LakeStorage

DAYS = ["2026-10-01", "2026-10-02", "2026-10-03"]
DAILY = [raw_clickstream, orders, sessions, user_features, product_features, session_snapshots,
         online_features]


@pytest.fixture(scope="module")
def materialized(tmp_path_factory, spark_resource, redis_url):
    root = tmp_path_factory.mktemp("features")
    lake = LakeStorage(root=str(root / "lake"))
    feast = FeastResource(repo_path=feature_repo_path(), env="local", redis_url=redis_url,
                          lake_root=lake.root, home=str(root))
    resources = {"lake": lake, "oracle": LakeStorage(root=str(root / "oracle")),
                 "spark": spark_resource, "clickstream": ClickstreamSource(sessions_per_day=1200),
                 "feast": feast, "io_manager": LakeIOManager(lake=lake)}
    instance = DagsterInstance.ephemeral()
    daily = materialize(DAILY, resources=resources, instance=instance,
                        tags={"dagster/asset_partition_range_start": DAYS[0],
                              "dagster/asset_partition_range_end": DAYS[-1]})
    assert daily.success
    final = materialize([training_set, *DAILY], selection=[training_set.key], resources=resources,
                        instance=instance)
    assert final.success
    return lake, feast, final, resources, daily


@pytest.fixture(scope="module")
def built(materialized):
    return materialized[:4]


def test_every_feature_table_has_every_day(built):
    lake, _, _, _ = built
    for table in ("user_features", "product_features", "session_snapshots", "session_features"):
        assert lake.partitions(table) == DAYS, table


def test_training_set_joins_the_previous_days_user_features(built):
    lake, _, result, _ = built
    train = lake.read("training_set")
    snaps = lake.read("session_snapshots")
    assert len(train) == len(snaps) and set(train["snapshot_id"]) == set(snaps["snapshot_id"])
    users = lake.read("user_features")
    # a cut on day D must see day D-1's row (timestamped D 00:00), never day D's own
    late = train[train["date"] == "2026-10-03"].dropna(subset=["user_purchases_lifetime"])
    assert len(late) > 0
    expected = users[users["date"] == "2026-10-02"].set_index("user_id")["user_sessions_30d"]
    got = late.set_index("user_id")["user_sessions_30d"]
    common = got.index.intersection(expected.index)
    assert len(common) > 0
    np.testing.assert_array_equal(got.loc[common].groupby(level=0).first().sort_index().to_numpy(),
                                  expected.loc[common].groupby(level=0).first().sort_index().to_numpy())
    # day one has no history before it: no user feature row can be joined
    assert train.loc[train["date"] == DAYS[0], "user_purchases_lifetime"].isna().all()
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["rows"].value == len(train)


def test_feature_tables_record_row_counts_per_day_and_match_their_schema(materialized):
    from intent_assets.tables import column_schema

    lake, _, final, _, daily = materialized
    counted = set()
    for event in daily.get_asset_materialization_events():
        table, day = event.asset_key.to_user_string(), event.partition
        if table in ("user_features", "product_features", "session_snapshots"):
            rows = len(lake.read(table, [day]))
            assert event.materialization.metadata["dagster/row_count"].value == rows, (table, day)
            counted.add((table, day))
    assert len(counted) == 9
    for table in ("user_features", "product_features", "session_snapshots", "training_set"):
        assert set(c.name for c in column_schema(table).columns) == set(lake.read(table).columns), table
    train = final.get_asset_materialization_events()[0].materialization.metadata
    assert train["dagster/row_count"].value == len(lake.read("training_set"))


def test_online_store_serves_the_last_days_features(built):
    lake, feast, _, base = built
    users = lake.read("user_features", [DAYS[-1]])
    sample = users.sort_values("user_id").head(5)
    online = feast.store().get_online_features(
        features=["user_fv:user_purchases_lifetime", "user_fv:user_aov_lifetime"],
        entity_rows=[{"user_id": u} for u in sample["user_id"]]).to_dict()
    assert online["user_purchases_lifetime"] == list(sample["user_purchases_lifetime"])
    assert online["user_aov_lifetime"] == pytest.approx(
        [None if pd.isna(v) else v for v in sample["user_aov_lifetime"]], nan_ok=True)


# -- the model chain on the training set built above ---------------------------------------

def _chain(lake, feast, root_models, base, models=None):
    from dagster import FilesystemIOManager

    from intent_assets.reports.assets import reliability_report
    from intent_assets.training.assets import (
        calibrated_model,
        challenger_models,
        logistic_baseline,
        rules_baseline,
        tuned_model,
    )
    from intent_assets.training.checks import GATES
    from intent_resources.sagemaker_tuning import SageMakerTuningResource
    from intent_resources.storage import ArtifactStore

    from intent_resources.endpoint import ModelEndpointResource

    resources = {**base, "models": models or ArtifactStore(root=str(root_models)),
                 "model_endpoint": ModelEndpointResource(target="local", home=str(root_models),
                                                         start_local=False),
                 "model_io_manager": FilesystemIOManager(base_dir=str(root_models / "io")),
                 # tunes with Optuna here; the SageMaker backend is tests/e2e/test_sagemaker_tuning
                 "sagemaker_tuning": SageMakerTuningResource(role_arn="", bucket="",
                                                             training_image=""),
                 }
    chain = [tuned_model, rules_baseline, logistic_baseline, challenger_models, calibrated_model,
             reliability_report]
    return [*DAILY, training_set, *chain], GATES, resources, [a.key for a in chain]


def test_model_chain_trains_calibrates_gates_and_reports(built, tmp_path, moto_endpoint):
    import boto3

    from intent_resources.storage import ArtifactStore

    lake, feast, _, base = built
    # the store on S3, as in prod: what the chain passes on are S3 references
    bucket = "intent-chain-models"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket)
    store = ArtifactStore(root=str(tmp_path / "models"), uri=f"s3://{bucket}/models",
                          endpoint_url=moto_endpoint)
    assets, gates, resources, chain = _chain(lake, feast, tmp_path / "models", base, store)
    run_config = {"ops": {"tuned_model": {"config": {"n_trials": 3, "seed": 1}},
                          "challenger_models": {"config": {"n_trials": 1, "seed": 1}}}}
    result = materialize([*assets, *gates], resources=resources, run_config=run_config,
                         selection=chain, raise_on_error=False)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"pr_auc_gate", "ece_gate", "beats_logistic_gate", "no_leakage_gate"}
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"tuned_model", "rules_baseline", "logistic_baseline", "calibrated_model"} <= materialized
    model = result.output_for_node("calibrated_model")
    from serving.model import ModelArtifact

    prefix = f"s3://{bucket}/models/"
    refs = [model["artifact_dir"], model["tar_path"], model["test_predictions"],
            *(c["test_predictions"] for c in model["candidates"])]
    assert all(ref.startswith(prefix) for ref in refs), refs
    # another machine's copy, empty until it reads: everything comes from S3
    elsewhere = ArtifactStore(root=str(tmp_path / "elsewhere"), uri=store.uri,
                              endpoint_url=moto_endpoint)
    from_dir = ModelArtifact.load(elsewhere.local(model["artifact_dir"]))
    from_tar = ModelArtifact.load(elsewhere.local(model["tar_path"]))
    test = pd.read_parquet(elsewhere.local(model["test_predictions"]))
    rows = lake.read("training_set").set_index("snapshot_id").loc[test["snapshot_id"]].reset_index()
    np.testing.assert_allclose(from_dir.predict(rows), test["probability"], atol=1e-9)
    np.testing.assert_allclose(from_tar.predict(rows), test["probability"], atol=1e-9)
    # the report runs exactly when every blocking gate passed
    all_passed = all(c.passed for c in checks.values())
    assert ("reliability_report" in materialized) == all_passed
    if all_passed:  # the report's files are stored beside the model
        report = elsewhere.fetch("reports", model["version"])
        assert {"report.json", "report.md", "reliability.png"} <= {p.name for p in report.iterdir()}
    # the gate's bound: 0.02, or the noise floor of ECE on these test rows where higher
    gate = checks["ece_gate"].metadata
    floor = gate["noise_ece_q95"].value
    assert gate["ece_bound"].value == max(0.02, floor)
    assert floor == metrics.ece_noise(test["probability"], test["weight"],
                                      test["session_id"])["quantile"]
    failing = gate["failing_segments"].value
    assert all(f["bound"] >= 0.05 and f["ece"] > f["bound"] for f in failing)
    assert {(f["column"], f["value"]) for f in failing} <= {
        (s["column"], s["value"]) for s in model["segments"] if s["enough_data"] and s["ece"] > 0.05}
    assert checks["ece_gate"].passed == (model["metrics"]["ece"] <= max(0.02, floor)
                                         and not failing)


def test_a_model_worse_than_the_champion_is_stopped_at_the_gate(built, tmp_path):
    from intent_assets.training.train import train_model
    from serving.local import install_model, local_model_dir

    lake, feast, _, base = built
    models = tmp_path / "models"
    # A champion that has seen every labelled row, the candidate's test split included: on
    # those rows it must outscore any honest candidate, so the gate has to stop the candidate.
    champion = train_model(lake.read("training_set"), "label", out_dir=tmp_path / "champion",
                           n_trials=2, seed=3)
    install_model(champion.tar_path, local_model_dir(models))
    assets, gates, resources, chain = _chain(lake, feast, models, base)
    run_config = {"ops": {"tuned_model": {"config": {"n_trials": 2, "seed": 1}},
                          "challenger_models": {"config": {"families": []}}}}
    result = materialize([*assets, *gates], resources=resources, run_config=run_config,
                         selection=chain, raise_on_error=False)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    gate = checks["pr_auc_gate"]
    assert gate.passed is False, gate.metadata
    assert not result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "reliability_report" not in materialized


def test_batch_scores_score_a_day_with_the_published_artifact(built, tmp_path):
    from intent_assets.publication.assets import batch_scores, published_model
    from intent_resources.endpoint import ModelEndpointResource
    from intent_resources.storage import ArtifactStore
    from intent_assets.training.train import train_model
    from serving.local import install_model, local_model_dir
    from serving.model import ModelArtifact

    lake, feast, _, base = built
    train = lake.read("training_set")
    model = train_model(train, "label", out_dir=tmp_path / "model", n_trials=2, seed=5)
    install_model(model.tar_path, local_model_dir(tmp_path))
    endpoint = ModelEndpointResource(target="local", home=str(tmp_path), start_local=False)
    result = materialize([*DAILY, published_model, batch_scores], selection=[batch_scores.key],
                         resources={**base, "model_endpoint": endpoint,
                                    "models": ArtifactStore(root=str(tmp_path / "models"))},
                         partition_key=DAYS[-1])
    assert result.success
    scored = lake.read("batch_scores", [DAYS[-1]])
    schema = batch_scores.specs_by_key[batch_scores.key].metadata["dagster/column_schema"]
    assert list(scored.columns) == [c.name for c in schema.columns]
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key == batch_scores.key]
    assert event.materialization.metadata["dagster/row_count"].value == len(scored)
    # the day's partition: snapshots of the sessions that started that day (a session running
    # past midnight has snapshots dated the next day among them)
    partition = set(lake.read("session_snapshots", [DAYS[-1]])["snapshot_id"])
    day = train[train["snapshot_id"].isin(partition)].set_index("snapshot_id")
    assert len(day) == len(partition)
    assert len(scored) == len(day) and set(scored["snapshot_id"]) == set(day.index)
    expected = ModelArtifact.load(model.tar_path).predict(day.loc[scored["snapshot_id"]].reset_index())
    np.testing.assert_allclose(scored["probability"], expected, atol=1e-9)
    from serving.policy import ACTIONS, BANDS

    assert set(scored["band"]) <= set(BANDS) and set(scored["action"]) <= set(ACTIONS)
    # likelier sessions never land in a lower band
    order = scored.assign(rank=scored["band"].map({b: i for i, b in enumerate(BANDS)}))
    assert order.groupby("rank")["probability"].max().is_monotonic_increasing
    assert (scored["model_version"] == model.version).all()
