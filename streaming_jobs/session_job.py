"""The live session job: clickstream in, session features in Redis and closed sessions in the lake.

A Spark Structured Streaming program with no Dagster inside:
`python -m streaming_jobs.session_job --help`, or `spark-submit streaming_jobs/session_job.py ...`
with the `streaming_jobs` package on `--py-files`. Launched by a Dagster Pipes client (the
bootstrap variables in its environment), it reports its start, progress and end to the run through
`dagster-pipes`, the protocol's light package; otherwise nothing of Pipes is opened. How it works
and its rules: docs/streaming.md.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import nullcontext
from typing import Optional

from streaming_jobs.heartbeat import supervise
from streaming_jobs.job_config import parse_args
from streaming_jobs.pipes_report import PipesReporter
from streaming_jobs.spark_app import build_spark, start_query

# what a Pipes client puts in the launched process's environment
PIPES_CONTEXT_VARIABLE = "DAGSTER_PIPES_CONTEXT"


def open_pipes():
    """Dagster Pipes' context when a Pipes client launched the job, else a context of None."""
    if PIPES_CONTEXT_VARIABLE not in os.environ:
        return nullcontext(None)
    from dagster_pipes import open_dagster_pipes

    return open_dagster_pipes()


def main(argv: Optional[list[str]] = None) -> int:
    cfg = parse_args(argv)
    with open_pipes() as pipes:
        reporter = PipesReporter(pipes)
        spark = build_spark(cfg)
        query, sink = start_query(spark, cfg)
        reporter.started(cfg, sink)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            code = supervise(query, sink, cfg, stop, on_heartbeat=reporter.heartbeat)
            reporter.ended(code)
            return code
        finally:
            spark.stop()


if __name__ == "__main__":
    sys.exit(main())
