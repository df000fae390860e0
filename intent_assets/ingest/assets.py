"""Ingest: the validated clickstream, orders and sessions, one daily partition at a time.

Every asset handles a range of days in one run (single-run backfills), and writing a day
replaces it whole, so re-materializing a partition yields the same rows.
"""


from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pyspark.sql import functions as F

from intent_assets.ingest import checks
from intent_assets.ingest.session_timeout import split_sessions
from intent_assets.ingest.sessionize import build_orders, build_sessions, order_lines
from intent_assets.ingest.simulator_world import build_world
from intent_assets.ingest.source import simulator_config
from intent_assets.ingest.spark_ingest import ingest_days
from intent_assets.partitions import daily, neighbouring_days
from intent_assets.tables import record_row_counts, schema_metadata
from intent_resources.clickstream import ClickstreamSource
from intent_resources.spark import SparkResource
from intent_resources.storage import LakeSlice, LakeStorage

DAILY = daily("ingest")


def write_spark_partitions(frame, lake: LakeStorage, table: str, days: list[str]) -> None:
    """Replace exactly the given day partitions of a table with the rows of `frame`."""
    for day in days:
        lake.delete(table, day)
    frame.write.mode("append").partitionBy("date").parquet(lake.spark_uri(table))


def rows_per_day(frame) -> dict[str, int]:
    """Rows of a Spark frame per `date` (cache the frame first: this is one more job on it)."""
    return {r["date"]: int(r["count"]) for r in frame.groupBy("date").count().collect()}


@asset(**DAILY, pool="spark", kinds={"spark", "parquet"}, metadata=schema_metadata("raw_clickstream"),
       check_specs=[AssetCheckSpec("contract_violations", asset="raw_clickstream"),
                             AssetCheckSpec("unique_event_ids", asset="raw_clickstream")])
def raw_clickstream(context: AssetExecutionContext, spark: SparkResource, lake: LakeStorage,
                    oracle: LakeStorage, clickstream: ClickstreamSource) -> MaterializeResult:
    """Clickstream events of the day that meet the contract; the rest in quarantine with reasons.

    Source: the embedded simulator (locally) or a landing table (imported REES46 files, Firehose).
    Duplicated event_ids keep their first received copy; later copies are quarantined. Spark's
    executors validate and write the days; the driver sees their counts only.
    """
    counts = ingest_days(spark.spark_session, clickstream, lake, oracle, list(context.partition_keys))
    if clickstream.kind == "simulator":
        _write_catalog(clickstream, lake)
    reasons: dict[str, int] = {}
    for day in counts:
        for reason, n in day["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + n
        context.log.info(f"{day['day']}: {day['rows']} events, {day['quarantined']} quarantined")
    written = sum(d["rows"] for d in counts)
    quarantined = sum(d["quarantined"] for d in counts)
    record_row_counts(context, {d["day"]: d["rows"] for d in counts})
    return MaterializeResult(
        metadata={"days": len(context.partition_keys), "rows": written, "quarantined": quarantined,
                  "source": clickstream.kind, "path": MetadataValue.path(lake.uri("raw_clickstream"))},
        check_results=[checks.contract_check(sum(d["read"] for d in counts), written, quarantined,
                                             reasons),
                       checks.unique_ids_check(written, sum(d["distinct"] for d in counts))],
    )


def _write_catalog(clickstream: ClickstreamSource, lake: LakeStorage) -> None:
    """The simulator's catalog (margins), beside the events it made."""
    catalog = build_world(simulator_config(clickstream)).products.rename(columns={"price": "list_price"})
    lake.write(catalog[["product_id", "category_id", "category_code", "brand", "list_price", "margin"]],
               "catalog")


@asset(**DAILY, ins={"raw_clickstream": AssetIn()}, pool="spark", kinds={"spark", "parquet"},
       metadata=schema_metadata("orders"),
       check_specs=[AssetCheckSpec("orders_reconcile_with_purchases", asset="orders")])
def orders(context: AssetExecutionContext, spark: SparkResource,
           raw_clickstream: LakeSlice, lake: LakeStorage) -> MaterializeResult:
    """Orders of the day, one row each, from the clickstream's purchase events."""
    session = spark.spark_session
    events = raw_clickstream.spark(session)
    table = build_orders(events).cache()
    write_spark_partitions(table, lake, "orders", context.partition_keys)
    record_row_counts(context, rows_per_day(table))
    stats = table.agg(F.count("*").alias("n"), F.sum("revenue").alias("rev"),
                      F.sum("n_items").alias("items")).first()
    lines = order_lines(events).agg(
        F.sum(F.coalesce(F.col("revenue"), F.col("price") * (1 - F.coalesce(F.col("discount"), F.lit(0.0)))))
        .alias("rev")).first()
    table.unpersist()
    return MaterializeResult(
        metadata={"orders": stats["n"], "items": int(stats["items"] or 0),
                  "revenue": round(float(stats["rev"] or 0.0), 2),
                  "path": MetadataValue.path(lake.uri("orders"))},
        check_results=[checks.orders_reconcile_check(float(stats["rev"] or 0.0),
                                                     float(lines["rev"] or 0.0), stats["n"])],
    )


@asset(**DAILY, ins={"raw_clickstream": AssetIn(partition_mapping=neighbouring_days)}, pool="spark",
       kinds={"spark", "parquet"}, metadata=schema_metadata("sessions"),
       check_specs=[AssetCheckSpec("label_rate_within_bounds", asset="sessions")])
def sessions(context: AssetExecutionContext, spark: SparkResource,
             raw_clickstream: LakeSlice, lake: LakeStorage,
             clickstream: ClickstreamSource) -> MaterializeResult:
    """One row per session, by the day it starts: event counts, context, label and bot flags.

    A pause beyond the session timeout starts a new session; the label looks a grace window
    past the session's end (30 minutes each by default); bot and single-heartbeat sessions are
    flagged, not dropped."""
    days = list(context.partition_keys)
    events = split_sessions(raw_clickstream.spark(spark.spark_session),
                            clickstream.session_timeout_min)
    table = build_sessions(events, days,
                           grace_minutes=clickstream.label_grace_min,
                           bot_min_events=clickstream.bot_min_events,
                           bot_events_per_minute=clickstream.bot_events_per_minute,
                           bot_max_events=clickstream.bot_max_events).cache()
    write_spark_partitions(table, lake, "sessions", days)
    record_row_counts(context, rows_per_day(table))
    stats = table.agg(
        F.count("*").alias("sessions"),
        F.sum(F.col("is_bot").cast("int")).alias("bots"),
        F.sum(F.col("is_single_heartbeat").cast("int")).alias("single"),
        F.sum(F.when(~F.col("is_bot"), 1).otherwise(0)).alias("human"),
        F.sum(F.when(~F.col("is_bot"), F.col("label")).otherwise(0)).alias("positives"),
        F.sum(F.col("is_trainable").cast("int")).alias("trainable"),
    ).first()
    preview = table.orderBy("session_id").limit(5).toPandas()
    table.unpersist()
    rate = (stats["positives"] or 0) / max(stats["human"] or 0, 1)
    return MaterializeResult(
        metadata={"sessions": stats["sessions"], "bots": stats["bots"],
                  "single_heartbeat": stats["single"], "trainable": stats["trainable"],
                  "label_rate": round(rate, 5), "path": MetadataValue.path(lake.uri("sessions")),
                  "preview": MetadataValue.md(preview.to_markdown(index=False))},
        check_results=[checks.label_rate_check(stats["human"] or 0, stats["positives"] or 0)],
    )
