"""The Spark side of the job: the session, the source, the query and its checkpoint layout.

`build_stream` chains source lines -> `prepare.prepare_lines` (mapInPandas) -> event-time
watermark -> `stateful.bucket_function` (applyInPandasWithState keyed by state bucket);
`start_query` adds the `sinks.SessionSink` as foreachBatch. See docs/streaming.md.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

from streaming_jobs.heartbeat import read_heartbeat
from streaming_jobs.job_config import QUERY_NAME, JobConfig, duration_ms
from streaming_jobs.prepare import BUCKET_HASH, PREPARED_SCHEMA, prepare_lines
from streaming_jobs.sinks import BatchStats, SessionSink
from streaming_jobs.stateful import BUCKET_STATE_SCHEMA, OUTPUT_SCHEMA, bucket_function

ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
# EventTimeWatermark.delayKey: the column metadata that marks an event-time column
WATERMARK_DELAY_KEY = "spark.watermarkDelayMs"
# Written into the checkpoint beside Spark's own files: how the session state is bucketed.
STATE_LAYOUT_FILE = "session_state_layout.json"


def build_spark(cfg: JobConfig):
    """A SparkSession for the job run as a program (spark-submit sets the master itself)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.appName(QUERY_NAME)
               .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.ui.showConsoleProgress", "false"))
    if cfg.master:
        builder = builder.master(cfg.master)
        if cfg.java_options:
            # C1 only by default: micro-batches keep bringing generated classes, so C2 keeps
            # compiling, and the JVM's share of this job is too small for C2's faster code to
            # pay for its compiling (docs/benchmarks.md has the figures).
            builder = builder.config("spark.driver.extraJavaOptions", cfg.java_options)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def source_lines(spark, cfg: JobConfig):
    """The raw stream: one `value` string per event (and `arrival` for Kinesis)."""
    from pyspark.sql import functions as F

    if cfg.source == "files":
        return (spark.readStream.format("text")
                .option("maxFilesPerTrigger", cfg.max_files_per_trigger)
                .load(cfg.landing))
    from streaming_jobs.kinesis_source import KinesisDataSource

    spark.dataSource.register(KinesisDataSource)
    reader = (spark.readStream.format(KinesisDataSource.name())
              .option("streamName", cfg.kinesis_stream)
              .option("region", cfg.kinesis_region)
              # availableNow is one read for this source: no cap, or it would stop early
              .option("maxRecordsPerShard",
                      "0" if cfg.available_now else str(cfg.max_records_per_shard)))
    if cfg.kinesis_endpoint:
        reader = reader.option("endpointUrl", cfg.kinesis_endpoint)
    for name, value in cfg.kinesis_options.items():
        reader = reader.option(name, value)
    return reader.load().select(F.col("data").alias("value"),
                                F.col("approximate_arrival_timestamp").alias("arrival"))


def build_stream(spark, cfg: JobConfig):
    """The stateful part of the query: per state bucket, a row of output payloads."""
    from pyspark.sql import functions as F

    delay_ms = duration_ms(cfg.watermark)
    skew_us = duration_ms(cfg.max_clock_skew) * 1000
    lines = source_lines(spark, cfg)
    prepared = lines.mapInPandas(prepare_lines(skew_us, cfg.state_buckets), PREPARED_SCHEMA)
    watermarked = prepared.withWatermark("event_time", cfg.watermark)
    # Spark would drop rows behind the watermark before the state function sees them, and the
    # function must count and quarantine them: the real event_time must not reach the grouping.
    # The null guard column keeps the watermark visible to the operator (so it still fires
    # event-time timeouts) and the function judges lateness with `getCurrentWatermarkMs` (a
    # null long: Spark compares it to the watermark in us, and it converts to pandas cheaply).
    guard = F.lit(None).cast("long").alias("_watermark_guard",
                                           metadata={WATERMARK_DELAY_KEY: delay_ms})
    keyed = watermarked.select("bucket", "recs", guard)
    return keyed.groupBy("bucket").applyInPandasWithState(
        bucket_function(duration_ms(cfg.session_timeout), cfg.max_buffered_events,
                        cfg.state_buckets),
        OUTPUT_SCHEMA, BUCKET_STATE_SCHEMA, "update", "EventTimeTimeout")


def check_state_layout(spark, cfg: JobConfig) -> None:
    """Refuse to resume a checkpoint whose sessions were hashed into another number of buckets
    or by another hash (they would be looked for in the wrong state groups); record the layout
    of a new one."""
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(f"{cfg.checkpoint.rstrip('/')}/{STATE_LAYOUT_FILE}")
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    if fs.exists(path):
        stream = fs.open(path)
        try:
            stored = json.loads(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()
        if stored.get("state_buckets") != cfg.state_buckets:
            raise ValueError(
                f"the checkpoint {cfg.checkpoint} hashed sessions into "
                f"{stored.get('state_buckets')} state buckets, this job into {cfg.state_buckets}: "
                f"restart it with --state-buckets {stored.get('state_buckets')}")
        if stored.get("bucket_hash") != BUCKET_HASH:
            raise ValueError(
                f"the checkpoint {cfg.checkpoint} hashed sessions into state buckets by "
                f"{stored.get('bucket_hash', 'xxhash64')}, this job by {BUCKET_HASH}: it cannot "
                "resume that state; start from a new checkpoint")
        return
    out = fs.create(path, True)
    try:
        out.write(bytearray(json.dumps({"state_buckets": cfg.state_buckets,
                                        "bucket_hash": BUCKET_HASH}).encode()))
    finally:
        out.close()


def start_query(spark, cfg: JobConfig, sink: Optional[SessionSink] = None):
    """Start the streaming query on `spark`; returns (query, sink).

    The state store choice applies to this query only: a query copies the session's settings
    when it starts (and a checkpoint keeps the provider it was created with). A checkpoint also
    keeps its state bucket count (`check_state_layout`).
    """
    check_state_layout(spark, cfg)
    if sink is None:
        previous = read_heartbeat(cfg.heartbeat)
        if previous and previous.get("checkpoint") == cfg.checkpoint:
            last_id = previous.get("sink_batch_id")
            last = BatchStats(batch_id=-1 if last_id is None else int(last_id),
                              quarantine=previous.get("quarantine_batch") or {})
            sink = SessionSink(cfg, previous.get("quarantine_total"), last,
                               previous.get("live_sessions_by_bucket"))
        else:
            sink = SessionSink(cfg)
    writer = (build_stream(spark, cfg).writeStream.queryName(QUERY_NAME)
              .foreachBatch(sink).outputMode("update")
              .option("checkpointLocation", cfg.checkpoint))
    writer = (writer.trigger(availableNow=True) if cfg.available_now
              else writer.trigger(processingTime=cfg.trigger))
    key = "spark.sql.streaming.stateStore.providerClass"
    previous = spark.conf.get(key, None)
    if cfg.state_store == "rocksdb":
        spark.conf.set(key, ROCKSDB_PROVIDER)
    try:
        query = writer.start()
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
    return query, sink
