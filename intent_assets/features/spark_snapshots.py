"""Session snapshots and closed-session features on Spark: the state machine run on the executors.

Sessions are hashed into buckets and each bucket's events go through the same pandas code the
one-process path runs (`snapshots.snapshots_from_states` over `session_state.replay`), one call
per bucket, as the streaming job's state buckets do. A session's rows depend on its own events
only, so the rows equal `snapshots.day_snapshots`'s whatever the bucketing; the table files hold
them in the same order. Measured by `benchmarks/batch_features.py` (docs/benchmarks.md).
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from intent_assets.features.snapshots import (
    SCORING_MOMENTS,
    SNAPSHOT_COLUMNS,
    closed_from_states,
    snapshots_from_states,
)
from intent_resources.storage import LakeStorage
from streaming_jobs.session_state import FEATURE_NAMES, SESSION_FEATURES, replay

# Events per Python call stay in the tens of thousands up to ~25 M events a run; more buckets
# cost one small call each.
BUCKETS = 256
# Replay input: the fields `session_state.replay` reads.
EVENT_COLUMNS: tuple[str, ...] = (
    "session_id", "event_id", "event_time", "event_type", "user_id", "product_id", "category_id",
    "price", "device", "country", "traffic_source", "page_type")
CLOSED_COLUMNS: tuple[str, ...] = ("session_id", "event_timestamp", *FEATURE_NAMES)
SNAPSHOT, CLOSED = "snapshot", "closed"

_SPARK_TYPES = {"int": "bigint", "float": "double", "string": "string"}
_KINDS = {**{name: kind for name, kind, _ in SESSION_FEATURES}, "label": "int", "weight": "float",
          "event_timestamp": "timestamp"}
# One output row type for both tables, told apart by `kind`; `session_day` is the partition
# (the day the session starts), `date` the snapshot's own day.
OUTPUT_SCHEMA = ", ".join(
    [f"{c} {_SPARK_TYPES.get(_KINDS.get(c, 'string'), _KINDS.get(c))}" for c in SNAPSHOT_COLUMNS]
    + ["kind string", "session_day string"])


def _bucket_function(max_per_session: int, seed: int, keep_rate: float, moments):
    """The applyInPandas function: one bucket's sessions replayed once, both outputs from it."""
    out_columns = [*SNAPSHOT_COLUMNS, "kind", "session_day"]

    def run(frame: pd.DataFrame) -> pd.DataFrame:
        events = frame[list(EVENT_COLUMNS)]
        if events["event_id"].duplicated().any():
            raise ValueError("events hold duplicate event_ids; deduplicate them first")
        sessions = frame.drop_duplicates("session_id").set_index("session_id")
        states = replay(events)
        trainable = sessions.loc[sessions["is_trainable"].eq(True), "label"]
        if trainable.isna().any():
            raise ValueError("trainable sessions without a label")
        snaps = snapshots_from_states(states, events, trainable.astype("int64"),
                                      max_per_session, seed, keep_rate, moments
                                      ).assign(kind=SNAPSHOT)
        closed = closed_from_states(states).assign(kind=CLOSED)
        out = pd.concat([snaps, closed], ignore_index=True)
        out["session_day"] = out["session_id"].map(sessions["session_day"])
        return out.reindex(columns=out_columns)

    return run


def session_outputs(events: DataFrame, sessions: DataFrame, max_per_session: int, seed: int,
                    keep_rate: float, buckets: int = BUCKETS,
                    moments: tuple[tuple[str, str | None], ...] = SCORING_MOMENTS) -> DataFrame:
    """Snapshot rows (`kind` = snapshot) and closed-session rows (`kind` = closed) of the
    sessions in `sessions`, replayed from `events` on the executors.

    `events` must hold every event of those sessions (a session crossing midnight needs the
    next day's); `sessions` needs session_id, is_trainable, label and date (its start day).
    """
    if max_per_session < 1:
        raise ValueError(f"max_per_session must be at least 1, got {max_per_session}")
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    present = [c for c in EVENT_COLUMNS if c in events.columns]
    picked = events.select(*present, *(F.lit(None).cast("string").alias(c)
                                       for c in EVENT_COLUMNS if c not in present))
    keyed = (picked.join(sessions.select("session_id", "is_trainable", "label",
                                         F.col("date").cast("string").alias("session_day")),
                         "session_id")
             .withColumn("bucket", F.pmod(F.xxhash64("session_id"), F.lit(buckets))))
    return keyed.groupBy("bucket").applyInPandas(
        _bucket_function(max_per_session, seed, keep_rate, moments), OUTPUT_SCHEMA)


def day_table(outputs: DataFrame, kind: str, day: str) -> DataFrame:
    """One day's rows of one output as the one-process path writes them: one file, same order."""
    rows = outputs.where((F.col("kind") == kind) & (F.col("session_day") == day))
    if kind == SNAPSHOT:
        return (rows.select(*SNAPSHOT_COLUMNS).repartition(1)
                .sortWithinPartitions("session_id", "event_timestamp", "snapshot_id"))
    return rows.select(*CLOSED_COLUMNS).repartition(1).sortWithinPartitions("session_id")


def write_day_tables(outputs: DataFrame, lake: LakeStorage, days: list[str]) -> None:
    """Replace each day's `session_snapshots` and `session_features` partitions (cache first)."""
    for day in days:
        for kind, table in ((SNAPSHOT, "session_snapshots"), (CLOSED, "session_features")):
            day_table(outputs, kind, day).write.mode("overwrite").parquet(lake.spark_uri(table, day))
