"""The live session job: clickstream in, session features in Redis and closed sessions in the lake.

A Spark Structured Streaming program with no Dagster inside:
`python -m streaming_jobs.session_job --help`, or `spark-submit streaming_jobs/session_job.py ...`
with the `streaming_jobs` package on `--py-files`. How it works and its rules: docs/streaming.md.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Optional

from streaming_jobs.heartbeat import supervise
from streaming_jobs.job_config import parse_args
from streaming_jobs.spark_app import build_spark, start_query


def main(argv: Optional[list[str]] = None) -> int:
    cfg = parse_args(argv)
    spark = build_spark(cfg)
    query, sink = start_query(spark, cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        return supervise(query, sink, cfg, stop)
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
