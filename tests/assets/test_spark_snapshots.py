"""Snapshots on Spark equal the one-process path: same cuts, features, sampling, files' rows."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from intent_assets.features.snapshots import day_snapshots
from intent_assets.features.spark_snapshots import session_outputs, write_day_tables
from intent_assets.ingest.assets import write_spark_partitions
from intent_assets.ingest.spark_ingest import ingest_day
from intent_assets.ingest.sessionize import build_sessions
from intent_assets.ingest.simulator import events_on
from intent_assets.ingest.simulator_world import SimulatorConfig
from intent_resources.storage import LakeStorage
from streaming_jobs.contract import arrow_schema

DAYS = ["2024-06-03", "2024-06-04", "2024-06-05"]


@pytest.fixture(scope="module")
def lakes(spark, tmp_path_factory):
    """Three simulated days ingested and sessionized; one lake per path, same inputs."""
    config = SimulatorConfig(seed=5, sessions_per_day=300)
    root = tmp_path_factory.mktemp("snapshots")
    spark_lake, pandas_lake = LakeStorage(root=str(root / "spark")), LakeStorage(root=str(root / "pandas"))
    days = {day: ingest_day(events_on(config, dt.date.fromisoformat(day)))[0] for day in DAYS}
    # one session crossing the first midnight: its cuts after it stay with the day it started
    template = days[DAYS[0]].iloc[0]
    crossing = pd.DataFrame([{**template.to_dict(), "event_id": f"midnight-{i}",
                              "session_id": "midnight", "event_type": kind,
                              "event_time": pd.Timestamp(DAYS[1], tz="UTC") + pd.Timedelta(minutes=m)}
                             for i, (kind, m) in enumerate([("view", -3), ("cart", -2), ("view", 1),
                                                            ("cart", 2), ("purchase", 3)])])
    crossing = crossing.astype(days[DAYS[0]].dtypes.to_dict())
    for day in DAYS[:2]:
        on_day = crossing[crossing["event_time"].dt.strftime("%Y-%m-%d") == day]
        days[day] = pd.concat([days[day], on_day], ignore_index=True)
    for day, events in days.items():
        for lake in (spark_lake, pandas_lake):
            lake.write(events, "raw_clickstream", day, schema=arrow_schema())
    events = spark.read.parquet(spark_lake.spark_uri("raw_clickstream"))
    sessions = build_sessions(events, DAYS)
    for lake in (spark_lake, pandas_lake):
        write_spark_partitions(sessions, lake, "sessions", DAYS)
    return spark_lake, pandas_lake


@pytest.mark.parametrize("max_per_session, seed, keep_rate", [(10, 0, 0.5), (3, 7, 1.0)])
def test_spark_snapshots_equal_the_one_process_path(spark, lakes, max_per_session, seed, keep_rate):
    spark_lake, pandas_lake = lakes
    days = DAYS[:2]  # the third day only supplies the second's sessions crossing midnight
    events = pandas_lake.read("raw_clickstream")
    sessions = pandas_lake.read("sessions", days)
    for day in days:
        snaps, closed = day_snapshots(events, sessions, day, max_per_session, seed, keep_rate)
        pandas_lake.write(snaps, "session_snapshots", day)
        pandas_lake.write(closed, "session_features", day)

    outputs = session_outputs(spark.read.option("basePath", spark_lake.spark_uri("raw_clickstream"))
                              .parquet(spark_lake.spark_uri("raw_clickstream")),
                              spark.read.parquet(spark_lake.spark_uri("sessions"))
                              .where("date in ('2024-06-03', '2024-06-04')"),
                              max_per_session, seed, keep_rate, buckets=7).cache()
    write_day_tables(outputs, spark_lake, days)
    outputs.unpersist()

    for table in ("session_snapshots", "session_features"):
        for day in days:
            want, got = pandas_lake.read(table, [day]), spark_lake.read(table, [day])
            assert len(want) > 100
            pd.testing.assert_frame_equal(got, want)
    if keep_rate == 1.0:  # every cut kept: the crossing session's are on both sides of midnight
        crossing = spark_lake.read("session_snapshots", [DAYS[0]]).query("session_id == 'midnight'")
        assert set(crossing["date"]) == {DAYS[0], DAYS[1]}
