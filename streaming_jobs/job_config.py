"""What the session job is told: its configuration, from the command line or built in code."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Optional

from streaming_jobs.redis_target import parse_redis_url

# The query's name: Spark's app and query name and the heartbeat's `query_name`.
QUERY_NAME = "session_features_stream"
# The first line of `python -m streaming_jobs.session_job --help`.
DESCRIPTION = ("The live session job: clickstream in, session features in Redis and closed "
               "sessions in the lake.")


@dataclass
class JobConfig:
    """Everything the job is told; `parse_args` builds it from the command line."""

    checkpoint: str
    redis_url: str
    lake: str
    heartbeat: str
    source: str = "files"                 # files | kinesis
    landing: Optional[str] = None         # files: a directory of JSON-lines files
    kinesis_stream: Optional[str] = None
    kinesis_region: str = "us-east-1"
    kinesis_endpoint: Optional[str] = None
    kinesis_options: dict = field(default_factory=dict)  # more source options (not on the CLI)
    watermark: str = "20 minutes"
    session_timeout: str = "30 minutes"
    trigger: str = "1 second"
    available_now: bool = False           # process what is there, then stop
    max_files_per_trigger: int = 64
    max_records_per_shard: int = 10_000
    state_store: str = "hdfs"             # hdfs (Spark's default) | rocksdb
    max_buffered_events: int = 256
    max_clock_skew: str = "1 hour"
    shuffle_partitions: int = 4
    state_buckets: int = 64
    project: str = "intent"
    redis_ttl_seconds: int = 2 * 86_400
    s3_endpoint: Optional[str] = None
    batch_log: Optional[str] = None       # a JSON line per batch (landing time, latencies)
    metrics_file: Optional[str] = None    # the heartbeat as Prometheus text (textfile collector)
    master: Optional[str] = None
    java_options: str = "-XX:TieredStopAtLevel=1"  # the JVM's, when the job starts it (--master)

    def __post_init__(self) -> None:
        if self.source not in ("files", "kinesis"):
            raise ValueError(f"unknown source {self.source!r}; expected files or kinesis")
        if self.source == "files" and not self.landing:
            raise ValueError("the files source needs --landing")
        if self.source == "kinesis" and not self.kinesis_stream:
            raise ValueError("the kinesis source needs --kinesis-stream")
        if self.state_store not in ("hdfs", "rocksdb"):
            raise ValueError(f"unknown state store {self.state_store!r}; expected hdfs or rocksdb")
        if self.state_buckets < 1:
            raise ValueError("state_buckets must be at least 1")


def duration_ms(text: str) -> int:
    """Milliseconds of a Spark-style interval such as '20 minutes', '1 second', '500 ms'."""
    units = {"ms": 1, "millisecond": 1, "milliseconds": 1, "s": 1000, "sec": 1000,
             "second": 1000, "seconds": 1000, "min": 60_000, "minute": 60_000,
             "minutes": 60_000, "h": 3_600_000, "hour": 3_600_000, "hours": 3_600_000,
             "day": 86_400_000, "days": 86_400_000}
    parts = text.strip().split()
    if len(parts) != 2 or parts[1].lower() not in units:
        raise ValueError(f"not an interval: {text!r} (e.g. '20 minutes')")
    return int(float(parts[0]) * units[parts[1].lower()])


def parse_args(argv: Optional[list[str]] = None) -> JobConfig:
    """The job's configuration from its arguments; REDIS_URL and INTENT_LAKE fill the gaps."""
    p = argparse.ArgumentParser(prog="python -m streaming_jobs.session_job",
                                description=DESCRIPTION)
    p.add_argument("--checkpoint", required=True,
                   help="durable checkpoint location (local path, s3a://); required")
    p.add_argument("--source", choices=["files", "kinesis"], default="files")
    p.add_argument("--landing", help="files source: directory of JSON-lines files")
    p.add_argument("--kinesis-stream")
    p.add_argument("--kinesis-region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    p.add_argument("--kinesis-endpoint", help="a non-AWS endpoint (a moto server)")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    p.add_argument("--lake", default=os.environ.get("INTENT_LAKE"),
                   help="lake root for session_features_stream and stream_quarantine (path or s3://)")
    p.add_argument("--heartbeat", required=True, help="local file the heartbeat JSON goes to")
    p.add_argument("--batch-log", help="append one JSON line per batch here (benchmarks)")
    p.add_argument("--metrics-file", help="also write the heartbeat here as Prometheus text, "
                                          "for node_exporter's textfile collector")
    p.add_argument("--watermark", default="20 minutes", help="event-time watermark delay")
    p.add_argument("--session-timeout", default="30 minutes",
                   help="close a session this long (event time) after its latest event")
    p.add_argument("--trigger", default="1 second", help="micro-batch interval")
    p.add_argument("--available-now", action="store_true",
                   help="process everything available, then stop")
    p.add_argument("--max-files-per-trigger", type=int, default=64)
    p.add_argument("--max-records-per-shard", type=int, default=10_000)
    p.add_argument("--state-store", choices=["hdfs", "rocksdb"], default="hdfs")
    p.add_argument("--max-buffered-events", type=int, default=256,
                   help="events kept per session for out-of-order re-folds")
    p.add_argument("--max-clock-skew", default="1 hour",
                   help="quarantine events stamped further than this in the future")
    p.add_argument("--shuffle-partitions", type=int, default=4,
                   help="state partitions; fixed by the checkpoint once the job has run")
    p.add_argument("--state-buckets", type=int, default=64,
                   help="sessions are hashed into this many state groups (one Python call "
                        "each per batch); fixed by the checkpoint once the job has run")
    p.add_argument("--project", default="intent", help="Feast project name (the key suffix)")
    p.add_argument("--redis-ttl-seconds", type=int, default=2 * 86_400)
    p.add_argument("--s3-endpoint", help="a non-AWS S3 endpoint for the lake (a moto server)")
    p.add_argument("--master", help="Spark master when not run by spark-submit (e.g. local[2])")
    p.add_argument("--java-options", default="-XX:TieredStopAtLevel=1",
                   help="options of the JVM the job starts with --master (spark-submit takes "
                        "its own --driver-java-options); the default compiles with C1 only")
    a = p.parse_args(argv)
    if not a.redis_url:
        p.error("--redis-url (or REDIS_URL) is required")
    try:
        parse_redis_url(a.redis_url)
    except ValueError as error:
        p.error(f"--redis-url: {error}")
    if not a.lake:
        p.error("--lake (or INTENT_LAKE) is required")
    return JobConfig(
        checkpoint=a.checkpoint, redis_url=a.redis_url, lake=a.lake, heartbeat=a.heartbeat,
        source=a.source, landing=a.landing, kinesis_stream=a.kinesis_stream,
        kinesis_region=a.kinesis_region, kinesis_endpoint=a.kinesis_endpoint,
        watermark=a.watermark, session_timeout=a.session_timeout, trigger=a.trigger,
        available_now=a.available_now, max_files_per_trigger=a.max_files_per_trigger,
        max_records_per_shard=a.max_records_per_shard, state_store=a.state_store,
        max_buffered_events=a.max_buffered_events, max_clock_skew=a.max_clock_skew,
        shuffle_partitions=a.shuffle_partitions, state_buckets=a.state_buckets, project=a.project,
        redis_ttl_seconds=a.redis_ttl_seconds, s3_endpoint=a.s3_endpoint,
        batch_log=a.batch_log, metrics_file=a.metrics_file, master=a.master,
        java_options=a.java_options)
