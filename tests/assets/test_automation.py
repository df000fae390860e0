"""Declarative automation of the nightly chain, evaluated against a real instance."""

import datetime as dt

import pytest
from dagster import AssetKey, AssetMaterialization, DagsterInstance, evaluate_automation_conditions

from intent_assets.definitions import build_definitions

DAY = "2026-10-02"  # the latest closed day at the evaluation times below
AT = dt.datetime(2026, 10, 3, tzinfo=dt.timezone.utc)


def at(hour: int, minute: int) -> dt.datetime:
    return AT.replace(hour=hour, minute=minute)


def land(instance: DagsterInstance, key: str, *partitions: str | None) -> None:
    for partition in partitions:
        instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=partition))


def requested(result) -> dict[str, set]:
    return {key.to_user_string(): result.get_requested_partitions(key)
            for key in (AssetKey(k) for k in ("raw_clickstream", "orders", "sessions",
                                              "user_features", "product_features",
                                              "session_snapshots", "online_features",
                                              "session_anomalies", "served_scores",
                                              "online_offline_consistency"))
            if result.get_num_requested(key)}


@pytest.fixture
def defs(tmp_path, monkeypatch):
    monkeypatch.setenv("INTENT_HOME", str(tmp_path))
    return build_definitions("local")


def test_the_sensor_and_conditions_are_in_the_definitions(defs):
    sensors = {s.name: s for s in defs.sensors}
    assert "automation_condition_sensor" in sensors
    graph = defs.resolve_asset_graph()
    for key in ("orders", "sessions", "user_features", "product_features", "session_snapshots",
                "online_features", "session_anomalies", "served_scores", "raw_clickstream",
                "online_offline_consistency"):
        assert graph.get(AssetKey(key)).automation_condition is not None, key
    for key in ("training_set", "tuned_model", "calibrated_model", "published_model"):
        assert graph.get(AssetKey(key)).automation_condition is None, key


NIGHTLY = ("raw_clickstream", "orders", "sessions", "user_features", "product_features",
           "session_snapshots", "online_features", "session_anomalies")
PREVIOUS = "2026-10-01"


def test_the_closed_day_is_ingested_after_01_30_and_its_chain_follows(defs):
    instance = DagsterInstance.ephemeral()
    for key in NIGHTLY:
        land(instance, key, PREVIOUS)
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(1, 0))
    assert requested(result) == {}
    # the whole chain of the day, in one tick: each asset waits for what it reads, and what it
    # reads is requested in the same tick (no model yet, so no served scores)
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(1, 31),
                                            cursor=result.cursor)
    assert requested(result) == {key: {DAY} for key in NIGHTLY}
    # requested once: the next tick asks for nothing more
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(1, 32),
                                            cursor=result.cursor)
    assert requested(result) == {}


def test_a_landing_partition_requests_the_partitions_that_read_it(defs):
    instance = DagsterInstance.ephemeral()
    land(instance, "raw_clickstream", PREVIOUS)
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(1, 0))
    assert requested(result) == {}
    # the day's clickstream lands (ingested by hand): orders and sessions of that day follow;
    # nothing that reads yesterday's missing orders or sessions does
    land(instance, "raw_clickstream", DAY)
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(1, 10),
                                            cursor=result.cursor)
    assert requested(result) == {"orders": {DAY}, "sessions": {DAY}, "session_snapshots": {DAY}}
    # yesterday's sessions and orders are backfilled: the features that read them follow
    land(instance, "orders", PREVIOUS, DAY)
    land(instance, "sessions", PREVIOUS, DAY)
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(1, 20),
                                            cursor=result.cursor)
    assert {"user_features", "product_features"} <= set(requested(result))
    assert "orders" not in requested(result)


def test_served_scores_wait_for_a_model_and_ignore_its_retrain(defs):
    instance = DagsterInstance.ephemeral()
    land(instance, "sessions", DAY)
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(2, 0))
    assert "served_scores" not in requested(result)  # no model has ever been trained

    land(instance, "calibrated_model", None)
    land(instance, "sessions", DAY)
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(2, 10),
                                            cursor=result.cursor)
    assert requested(result).get("served_scores") == {DAY}

    land(instance, "calibrated_model", None)  # the weekly retrain: no re-judging of the day
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(2, 20),
                                            cursor=result.cursor)
    assert "served_scores" not in requested(result)


def test_the_consistency_of_the_served_day_runs_once_it_has_closed(defs):
    instance = DagsterInstance.ephemeral()
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(1, 0))
    assert "online_offline_consistency" not in requested(result)  # before the tick
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(1, 31),
                                            cursor=result.cursor)
    # no training set yet: nothing to compare the served vectors with
    assert "online_offline_consistency" not in requested(result)
    land(instance, "training_set", None)
    # once it lands: the day that closed, never today (still being served), once
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(1, 40),
                                            cursor=result.cursor)
    assert requested(result).get("online_offline_consistency") == {DAY}
    result = evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at(1, 41),
                                            cursor=result.cursor)
    assert "online_offline_consistency" not in requested(result)
    # the next night: the next closed day
    result = evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=at(1, 31) + dt.timedelta(days=1),
        cursor=result.cursor)
    assert requested(result).get("online_offline_consistency") == {"2026-10-03"}
