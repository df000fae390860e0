"""The ingest assets materialized in-process on small simulated data, real Spark."""

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

from intent_assets.ingest.assets import orders, raw_clickstream, sessions
from intent_assets.ingest.source import arrived_events
from intent_assets.ingest.spark_ingest import ingest_day
from intent_resources.clickstream import ClickstreamSource
from intent_resources.storage import LakeIOManager, LakeStorage

RANGE = {"dagster/asset_partition_range_start": "2026-10-01",
         "dagster/asset_partition_range_end": "2026-10-03"}


@pytest.fixture(scope="module")
def built(tmp_path_factory, spark_resource):
    root = tmp_path_factory.mktemp("ingest")
    lake = LakeStorage(root=str(root / "lake"))
    resources = {"lake": lake, "oracle": LakeStorage(root=str(root / "oracle")),
                 "spark": spark_resource, "clickstream": ClickstreamSource(sessions_per_day=1500),
                 "io_manager": LakeIOManager(lake=lake)}
    instance = DagsterInstance.ephemeral()
    result = materialize([raw_clickstream, orders, sessions], resources=resources,
                         instance=instance, tags=RANGE)
    return result, lake, resources, instance


def test_a_three_day_backfill_runs_as_one_run_and_passes_its_checks(built):
    result, lake, _, _ = built
    assert result.success
    for table in ("raw_clickstream", "orders", "sessions", "quarantine_clickstream"):
        assert lake.partitions(table) == ["2026-10-01", "2026-10-02", "2026-10-03"], table
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"contract_violations": True, "unique_event_ids": True,
                      "orders_reconcile_with_purchases": True, "label_rate_within_bounds": True}
    keys = {(e.asset_key.to_user_string(), e.partition) for e in result.get_asset_materialization_events()}
    assert ("sessions", "2026-10-02") in keys and len(keys) == 9


def test_quarantine_keeps_every_broken_row_with_its_reason(built):
    _, lake, _, _ = built
    raw = lake.read("raw_clickstream")
    quarantine = lake.read("quarantine_clickstream")
    assert raw["event_id"].is_unique
    assert quarantine["quarantine_reason"].notna().all()
    assert {"duplicate event_id", "unknown event_type"} <= set(quarantine["quarantine_reason"])
    # a quarantined duplicate's original is in the clean table; a garbled copy never is
    dups = quarantine[quarantine["quarantine_reason"] == "duplicate event_id"]
    assert dups["event_id"].isin(raw["event_id"]).all()
    assert not quarantine.loc[quarantine["event_id"].str.endswith("-x", na=False), "event_id"].isin(raw["event_id"]).any()


def test_sessions_match_the_simulator_truth(built):
    _, lake, _, _ = built
    s = lake.read("sessions")
    truth = LakeStorage(root=lake.root.replace("/lake", "/oracle")).read("oracle_sessions")
    merged = s.merge(truth, on="session_id", suffixes=("", "_truth"))
    humans = merged[~merged["is_bot_truth"]]
    # every converting session is labelled 1
    assert (humans.loc[humans["outcome"] > 0, "label"] == 1).all()
    # bots by rule agree with the simulator's bots
    assert (merged["is_bot"] == merged["is_bot_truth"]).mean() > 0.99
    orders_total = lake.read("orders")["revenue"].sum()
    assert orders_total == pytest.approx(s["revenue"].fillna(0).sum(), rel=0.02)


def test_rematerializing_a_partition_yields_the_same_rows(built):
    _, lake, resources, instance = built
    before = lake.read("sessions", ["2026-10-02"]).sort_values("session_id", ignore_index=True)
    raw_before = lake.read("raw_clickstream", ["2026-10-02"])
    again = materialize([raw_clickstream, orders, sessions], resources=resources,
                        instance=instance, partition_key="2026-10-02")
    assert again.success
    after = lake.read("sessions", ["2026-10-02"]).sort_values("session_id", ignore_index=True)
    pd.testing.assert_frame_equal(before, after)
    pd.testing.assert_frame_equal(raw_before, lake.read("raw_clickstream", ["2026-10-02"]))


def _driver_tables(clickstream, lake, days):
    """raw_clickstream and its quarantine as the driver validated them, day by day in pandas."""
    raw, quarantine = [], []
    for day in days:
        events, broken = ingest_day(arrived_events(clickstream, day, lake))
        raw.append(events.assign(date=day))
        quarantine.append(broken.assign(source=clickstream.kind, date=day))
    return pd.concat(raw, ignore_index=True), pd.concat(quarantine, ignore_index=True)


def _assert_same_as_the_driver(lake, clickstream, days):
    raw, quarantine = _driver_tables(clickstream, lake, days)
    # each day is written whole by one task, in its own row order: the files read back in order
    pd.testing.assert_frame_equal(lake.read("raw_clickstream", days), raw, check_dtype=False,
                                  check_categorical=False)
    pd.testing.assert_frame_equal(lake.read("quarantine_clickstream", days), quarantine,
                                  check_dtype=False, check_categorical=False)


def test_the_executors_ingest_the_rows_the_driver_validated(built):
    """The simulated days, validated by Spark tasks: the same clean rows, quarantined rows and
    reasons as validating each day in the driver."""
    _, lake, resources, _ = built
    _assert_same_as_the_driver(lake, resources["clickstream"], ["2026-10-01", "2026-10-02", "2026-10-03"])


def test_the_executors_quarantine_a_landing_table_as_the_driver_does(tmp_path, spark_resource):
    """Broken rows, unknown fields and duplicates (kept first received, within a day) over three
    days split across tasks: the tables and the check's reasons equal the driver's."""
    lake = LakeStorage(root=str(tmp_path / "lake"))
    days = ["2026-10-05", "2026-10-06", "2026-10-07"]
    for i, day in enumerate(days):
        lake.write(pd.DataFrame({
            "event_id": ["a", "b", "b", "c", "d", "e", f"f{i}", "g"],
            "event_time": [f"{day} 10:00:00 UTC", f"{day} 10:01:00 UTC", f"{day} 10:00:30 UTC",
                           "yesterday", f"{day}T10:02:00Z", f"{day} 10:03:00", "", f"{day} 10:04:00 UTC"],
            "event_type": ["view", "cart", "cart", "view", "teleport", "view", "view", "purchase"],
            "user_id": ["1", "1", "1", "1", "2", " ", "3", "3"],
            "session_id": ["x", "x", "x", "x", "y", "z", "w", "w"],
            "product_id": ["9", "9", "9", "9", "9", None, "8", "8"],
            "price": [3.0, 3.0, 3.0, 3.0, 3.0, -1.0, 2.0, 2.0],
            "discount": [None, None, None, None, None, None, None, 1.5],
            "coupon_code": [None, "SPRING", None, None, None, None, None, "X"],
        }), "landing_test", day)
    source = ClickstreamSource(kind="landing", landing_table="landing_test")
    resources = {"lake": lake, "oracle": LakeStorage(root=str(tmp_path / "oracle")),
                 "spark": spark_resource, "clickstream": source}
    result = materialize([raw_clickstream], resources=resources,
                         tags={"dagster/asset_partition_range_start": days[0],
                               "dagster/asset_partition_range_end": days[-1]})
    assert result.success
    _assert_same_as_the_driver(lake, source, days)
    _, quarantine = _driver_tables(source, lake, days)
    check = next(c for c in result.get_asset_check_evaluations()
                 if c.check_name == "contract_violations")
    reasons = {k.removeprefix("quarantined: "): v.value for k, v in check.metadata.items()
               if k.startswith("quarantined: ")}
    assert reasons == quarantine["quarantine_reason"].value_counts().to_dict()
    assert reasons["duplicate event_id"] == 3 and check.metadata["rows_read"].value == 24


def test_landing_source_ingests_imported_rows(tmp_path, spark_resource):
    lake = LakeStorage(root=str(tmp_path / "lake"))
    rows = pd.DataFrame({
        "event_id": ["a", "b", "c"], "event_time": ["2026-10-05 10:00:00 UTC"] * 3,
        "event_type": ["view", "cart", "teleport"], "user_id": ["1", "1", "1"],
        "session_id": ["x", "x", "x"], "product_id": ["9", "9", "9"], "price": [3.0, 3.0, 3.0],
    })
    lake.write(rows, "landing_test", "2026-10-05")
    resources = {"lake": lake, "oracle": LakeStorage(root=str(tmp_path / "oracle")),
                 "spark": spark_resource,
                 "clickstream": ClickstreamSource(kind="landing", landing_table="landing_test")}
    result = materialize([raw_clickstream], resources=resources, partition_key="2026-10-05")
    assert result.success
    assert sorted(lake.read("raw_clickstream")["event_id"]) == ["a", "b"]
    q = lake.read("quarantine_clickstream")
    assert list(q["event_id"]) == ["c"] and list(q["quarantine_reason"]) == ["unknown event_type"]
    assert not (tmp_path / "oracle").exists()


def test_each_partition_records_its_row_count_and_the_schema_matches_the_table(built):
    from intent_assets.tables import column_schema

    result, lake, _, _ = built
    for event in result.get_asset_materialization_events():
        table, day = event.asset_key.to_user_string(), event.partition
        rows = len(lake.read(table, [day]))
        assert rows > 0 and event.materialization.metadata["dagster/row_count"].value == rows, (table, day)
    for table in ("raw_clickstream", "orders", "sessions"):
        assert [c.name for c in column_schema(table).columns] == list(lake.read(table).columns), table


def test_source_gaps_warns_with_the_reason_on_a_day_without_data(tmp_path):
    """A day with no sessions (or no events) is said to have nothing to judge, never passed."""
    from dagster import AssetSelection, Definitions, asset, define_asset_job

    from intent_assets.ingest.gaps import source_gaps
    from intent_assets.partitions import daily_partitions

    lake = LakeStorage(root=str(tmp_path / "lake"))
    day = "2026-10-02"

    @asset(key="raw_clickstream", partitions_def=daily_partitions)
    def empty_events(context) -> None:
        lake.write(pd.DataFrame({"event_id": pd.Series(dtype=object)}), "raw_clickstream",
                   context.partition_key)

    @asset(key="sessions", partitions_def=daily_partitions, deps=["raw_clickstream"])
    def empty_sessions(context) -> None:
        lake.write(pd.DataFrame({"session_id": pd.Series(dtype=object)}), "sessions",
                   context.partition_key)

    job = Definitions(
        assets=[empty_events, empty_sessions], asset_checks=[source_gaps],
        resources={"io_manager": LakeIOManager(lake=lake)},
        jobs=[define_asset_job("gaps_job", selection=AssetSelection.all(),
                               partitions_def=daily_partitions)]).resolve_job_def("gaps_job")
    result = job.execute_in_process(partition_key=day)
    evaluation = next(e.event_specific_data for e in result.all_events
                      if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert not evaluation.passed
    assert evaluation.metadata["status"].value == "no data"
    assert evaluation.metadata["sessions"].value == 0


@pytest.mark.parametrize("timeout, moments, sessions_made, cuts", [
    (60, ["view", "cart"], ["x"], ["e0", "e1", "e2", "e3", "e4"]),
    (30, ["cart"], ["x", "x~1"], ["e1", "e3"]),
])
def test_the_configured_timeout_and_scoring_moments_shape_sessions_and_snapshots(
        tmp_path, spark_resource, timeout, moments, sessions_made, cuts):
    from intent_assets.features.assets import SnapshotConfig, session_snapshots

    lake = LakeStorage(root=str(tmp_path / "lake"))
    # one source session pausing 40 minutes after its second event
    minutes = [0, 2, 42, 44, 46]
    kinds = ["view", "cart", "view", "cart", "view"]
    rows = pd.DataFrame({
        "event_id": [f"e{i}" for i in range(5)],
        "event_time": [f"2026-10-05 10:{m:02d}:00 UTC" for m in minutes],
        "event_type": kinds, "user_id": ["1"] * 5, "session_id": ["x"] * 5,
        "product_id": ["9"] * 5, "price": [3.0] * 5,
    })
    lake.write(rows, "landing_test", "2026-10-05")
    source = ClickstreamSource(kind="landing", landing_table="landing_test",
                               session_timeout_min=timeout, scoring_moments=moments)
    resources = {"lake": lake, "oracle": LakeStorage(root=str(tmp_path / "oracle")),
                 "spark": spark_resource, "clickstream": source,
                 "io_manager": LakeIOManager(lake=lake)}
    result = materialize([raw_clickstream, sessions, session_snapshots], resources=resources,
                         partition_key="2026-10-05",
                         run_config={"ops": {"session_snapshots": {"config": SnapshotConfig(
                             keep_rate=1.0).model_dump()}}})
    assert result.success
    assert sorted(lake.read("sessions")["session_id"]) == sessions_made
    snaps = lake.read("session_snapshots").set_index("snapshot_id").sort_index()
    assert list(snaps.index) == cuts
    # each cut's features count the events of its own session only
    parts = {"x": ["e0", "e1", "e2", "e3", "e4"]} if len(sessions_made) == 1 else \
        {"x": ["e0", "e1"], "x~1": ["e2", "e3", "e4"]}
    for cut, row in snaps.iterrows():
        assert cut in parts[row["session_id"]]
        assert row["session_n_events"] == parts[row["session_id"]].index(cut) + 1
