"""Features: batch user and product features on Spark, session snapshots, Feast online and offline.

Each asset reads its upstream through the IO manager (a slice of lake partitions), calls the
pure function that defines the features, writes, and reports figures as metadata.
"""

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pyspark.sql import functions as F

from intent_assets.features.batch import product_features as compute_product_features
from intent_assets.features.batch import user_features as compute_user_features
from intent_assets.features.feast_ops import materialize_day
from intent_assets.features.snapshots import KEEP_RATE, MAX_PER_SESSION
from intent_assets.features.spark_snapshots import SNAPSHOT, session_outputs, write_day_tables
from intent_assets.features.spark_training import (
    build_training_frame,
    read_snapshots,
    training_frame_metadata,
    write_training_set,
)
from intent_assets.ingest.assets import rows_per_day, write_spark_partitions
from intent_assets.ingest.session_timeout import split_sessions
from intent_assets.partitions import (
    daily,
    history_to_date,
    last_30_days,
    neighbouring_days,
)
from intent_assets.tables import record_row_counts, schema_metadata
from intent_resources.clickstream import ClickstreamSource
from intent_resources.feast import FeastResource
from intent_resources.spark import SparkResource
from intent_resources.storage import LakeSlice, LakeStorage

DAILY = daily("features")


def _spark_feature_result(context: AssetExecutionContext, frame, lake: LakeStorage, table: str,
                          key: str) -> MaterializeResult:
    days = list(context.partition_keys)
    frame = frame.cache()
    write_spark_partitions(frame, lake, table, days)
    per_day = rows_per_day(frame)
    record_row_counts(context, per_day)
    rows = sum(per_day.values())
    entities = frame.select(key).distinct().count()
    preview = frame.orderBy("date", key).limit(5).toPandas()
    frame.unpersist()
    return MaterializeResult(metadata={
        "rows": rows, key.replace("_id", "s"): entities, "days": len(days),
        "path": MetadataValue.path(lake.uri(table)),
        "preview": MetadataValue.md(preview.to_markdown(index=False)),
    })


@asset(**DAILY, pool="spark", kinds={"spark", "parquet"},
       metadata=schema_metadata("user_features"),
       ins={"orders": AssetIn(partition_mapping=history_to_date),
            "sessions": AssetIn(partition_mapping=history_to_date),
            "raw_clickstream": AssetIn(partition_mapping=history_to_date)})
def user_features(context: AssetExecutionContext, spark: SparkResource, lake: LakeStorage,
                  orders: LakeSlice, sessions: LakeSlice, raw_clickstream: LakeSlice,
                  clickstream: ClickstreamSource) -> MaterializeResult:
    """Batch features per user as of the end of each day, for Feast's user view.

    From data strictly before the day: purchase counts, recency, AOV, sessions, conversion,
    category/brand affinity, discount sensitivity."""
    session = spark.spark_session
    days = list(context.partition_keys)
    events = split_sessions(raw_clickstream.spark(session), clickstream.session_timeout_min)
    frame = compute_user_features(orders.spark(session), sessions.spark(session), events, days)
    return _spark_feature_result(context, frame, lake, "user_features", "user_id")


@asset(**DAILY, pool="spark", kinds={"spark", "parquet"},
       metadata=schema_metadata("product_features"),
       ins={"raw_clickstream": AssetIn(partition_mapping=last_30_days),
            "sessions": AssetIn(partition_mapping=last_30_days)})
def product_features(context: AssetExecutionContext, spark: SparkResource, lake: LakeStorage,
                     raw_clickstream: LakeSlice, sessions: LakeSlice,
                     clickstream: ClickstreamSource) -> MaterializeResult:
    """Batch features per product as of the end of each day, for Feast's product view.

    Smoothed view/cart→purchase rates (7 d, 30 d), recent demand, price band and price against
    the category median, margin."""
    session = spark.spark_session
    days = list(context.partition_keys)
    # The catalog comes with the simulated clickstream; imported data has none (margin is null).
    catalog = LakeSlice(lake, "catalog", None).spark(session) if lake.exists("catalog") else None
    # Bot sessions' views would dilute every rate: the sessions table says which they are.
    events = split_sessions(raw_clickstream.spark(session), clickstream.session_timeout_min)
    frame = compute_product_features(events, catalog, days, sessions=sessions.spark(session))
    return _spark_feature_result(context, frame, lake, "product_features", "product_id")


class SnapshotConfig(Config):
    """Which scoring moments become examples; see intent_assets/features/snapshots.py."""

    max_per_session: int = MAX_PER_SESSION
    keep_rate: float = KEEP_RATE
    seed: int = 0


@asset(**DAILY, pool="spark", kinds={"spark", "parquet"},
       metadata=schema_metadata("session_snapshots"),
       ins={"raw_clickstream": AssetIn(partition_mapping=neighbouring_days), "sessions": AssetIn()})
def session_snapshots(context: AssetExecutionContext, config: SnapshotConfig, spark: SparkResource,
                      lake: LakeStorage, raw_clickstream: LakeSlice, sessions: LakeSlice,
                      clickstream: ClickstreamSource) -> MaterializeResult:
    """Training examples: sessions cut at scoring moments, with the session features at the cut.

    Cuts are sampled before the first purchase without looking ahead; the features are replayed
    up to the cut by the session state machine, the label comes from what follows. Also writes
    `session_features`, each session's features at its last event: the offline log of Feast's
    session view (the streaming job appends the same rows live)."""
    session = spark.spark_session
    # the sessions table's ids: a pause beyond the timeout started a new session
    events = split_sessions(raw_clickstream.spark(session), clickstream.session_timeout_min)
    outputs = session_outputs(events, sessions.spark(session), config.max_per_session,
                              config.seed, config.keep_rate,
                              moments=clickstream.scoring_moment_pairs()).cache()
    days = list(context.partition_keys)
    write_day_tables(outputs, lake, days)
    stats = {r["session_day"]: r for r in (
        outputs.where(F.col("kind") == SNAPSHOT).groupBy("session_day")
        .agg(F.count("*").alias("rows"), F.countDistinct("session_id").alias("sessions"),
             F.countDistinct(F.when(F.col("label") == 1, F.col("session_id"))).alias("positives"))
        .collect())}
    outputs.unpersist()
    per_day = {day: int(stats[day]["rows"]) if day in stats else 0 for day in days}
    n_sessions = sum(int(r["sessions"]) for r in stats.values())
    positives = sum(int(r["positives"]) for r in stats.values())
    record_row_counts(context, per_day)
    return MaterializeResult(metadata={
        "snapshots": sum(per_day.values()), "sessions": n_sessions, "days": len(days),
        "session_label_rate": round(positives / n_sessions, 5) if n_sessions else 0.0,
        "path": MetadataValue.path(lake.uri("session_snapshots")),
    })


@asset(**DAILY, deps=["user_features", "product_features"], kinds={"feast", "redis"})
def online_features(context: AssetExecutionContext, feast: FeastResource) -> MaterializeResult:
    """The day's user and product features in the Redis online store, materialized by Feast.

    The online store keeps the latest row per entity, so a multi-day backfill writes only its
    last day: the earlier days would be overwritten at once."""
    feast.apply()
    day = context.partition_keys[-1]
    report = materialize_day(feast, day)
    views = report["views"]
    return MaterializeResult(metadata={
        "day_in_redis": day, "superseded_days": len(context.partition_keys) - 1,
        "users": views["user_fv"]["rows"], "products": views["product_fv"]["rows"],
        "seconds": round(sum(v["seconds"] for v in views.values()), 2),
        "window": f"{report['start']} .. {report['end']}",
    })


@asset(group_name="features", deps=["user_features", "product_features"], pool="spark",
       kinds={"feast", "spark", "parquet"}, metadata=schema_metadata("training_set"),
       ins={"session_snapshots": AssetIn()})
def training_set(spark: SparkResource, feast: FeastResource, lake: LakeStorage,
                 session_snapshots: LakeSlice) -> MaterializeResult:
    """The training table: every snapshot joined point-in-time to user and product features.

    Spark joins the Feast views' rows as of each cut (the day before's), by Feast's rules; one
    parquet table, with its label rate and feature null rates as metadata."""
    feast.apply()
    store = feast.store()
    session = spark.spark_session
    snapshots = read_snapshots(session, lake, session_snapshots.existing())
    frame = build_training_frame(session, snapshots, store).cache()
    write_training_set(frame, lake)
    meta = training_frame_metadata(frame)
    frame.unpersist()
    nulls = pd.Series(meta["null_rates"], name="null_rate").sort_values(ascending=False)
    return MaterializeResult(metadata={
        "dagster/row_count": meta["rows"], "rows": meta["rows"],
        "label_rate": round(meta["label_rate"] or 0.0, 5),
        "sessions": meta["sessions"], "days": meta["days"],
        "path": MetadataValue.path(lake.uri("training_set")),
        "null_rates": MetadataValue.md(nulls.round(4).to_frame().to_markdown()),
    })
