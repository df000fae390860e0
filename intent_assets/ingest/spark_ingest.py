"""Ingest on the Spark executors: each task arrives, validates and writes whole days; the driver
receives per-day counts only, so its memory does not grow with the days or their size.

The day is the unit of work because duplicates are judged within a day (`split_duplicates`)
and the simulator makes a day at a time. A task takes a run of consecutive days, so the
simulator's cached day before is reused. `ingest_day` and the lake writes are the ones the
driver used to run, unchanged: the tables equal validating in the driver, file for file
(tests/assets/test_spark_ingest.py).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from intent_assets.ingest.simulator import oracle_on
from intent_assets.ingest.source import arrived_events, simulator_config
from intent_resources.clickstream import ClickstreamSource
from intent_resources.storage import LakeStorage
from streaming_jobs.contract import arrow_schema, split_duplicates, validate_events


def ingest_day(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate one day of arrived events: (clean events, quarantined rows with reasons)."""
    checked = validate_events(events)
    deduped = split_duplicates(checked.events)
    quarantine = pd.concat([checked.quarantine, deduped.quarantine], ignore_index=True)
    return deduped.events, quarantine


def ingest_and_write(clickstream: ClickstreamSource, lake: LakeStorage, oracle: LakeStorage,
                     day: str) -> dict:
    """Validate one day and replace its `raw_clickstream` and `quarantine_clickstream`
    partitions (and, for the simulator, its oracle); returns the day's counts."""
    arrived = arrived_events(clickstream, day, lake)
    events, quarantine = ingest_day(arrived)
    lake.write(events, "raw_clickstream", day, schema=arrow_schema())
    lake.write(quarantine.assign(source=clickstream.kind), "quarantine_clickstream", day)
    if clickstream.kind == "simulator" and oracle.root:  # prod's oracle is optional
        per_event, per_session = oracle_on(simulator_config(clickstream), dt.date.fromisoformat(day))
        oracle.write(per_event, "oracle_events", day)
        oracle.write(per_session, "oracle_sessions", day)
    return {"day": day, "read": len(arrived), "rows": len(events), "quarantined": len(quarantine),
            "distinct": int(events["event_id"].nunique()),
            "reasons": {str(k): int(n) for k, n in
                        quarantine["quarantine_reason"].value_counts().items()}}


def _fields(resource) -> dict:
    """A resource's configuration: what an executor rebuilds it from (resources do not pickle)."""
    return {name: getattr(resource, name) for name in type(resource).model_fields}


def _consecutive_runs(days: list[str], tasks: int) -> list[list[str]]:
    """`days` (sorted) cut into at most `tasks` runs of consecutive days, of near-equal length."""
    days = sorted(days)
    tasks = max(1, min(tasks, len(days)))
    size, extra = divmod(len(days), tasks)
    runs, start = [], 0
    for i in range(tasks):
        end = start + size + (1 if i < extra else 0)
        runs.append(days[start:end])
        start = end
    return runs


def ingest_days(spark, clickstream: ClickstreamSource, lake: LakeStorage, oracle: LakeStorage,
                days: list[str]) -> list[dict]:
    """Ingest `days` on the executors, one task per run of consecutive days (as many runs as
    the cluster has cores); the per-day counts, in day order."""
    source, lake_conf, oracle_conf = _fields(clickstream), _fields(lake), _fields(oracle)

    def run(chunk):
        src, out, truth = ClickstreamSource(**source), LakeStorage(**lake_conf), LakeStorage(**oracle_conf)
        for days_of_task in chunk:
            for day in days_of_task:
                yield ingest_and_write(src, out, truth, day)

    runs = _consecutive_runs(days, spark.sparkContext.defaultParallelism)
    counts = spark.sparkContext.parallelize(runs, len(runs)).mapPartitions(run).collect()
    return sorted(counts, key=lambda c: c["day"])
