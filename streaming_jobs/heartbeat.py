"""The heartbeat: the job's state as one JSON file, which the Dagster supervisor reads.

The sink writes it before Spark commits each batch (so its counters stay exact across kills),
`supervise` refreshes it with Spark's progress figures after the batch, and every few seconds
in between: while the query idles, and while a batch runs, with the time that batch started
(`batch_running_since`). A stale heartbeat means a stuck driver; a batch running longer than the
supervisor's limit, a hung batch: a long batch alone is neither.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from streaming_jobs.heartbeat_metrics import heartbeat_metrics
from streaming_jobs.job_config import QUERY_NAME, JobConfig


def _s3_object(uri: str):
    """(client, bucket, key) of an ``s3://`` URI; boto3 follows AWS_ENDPOINT_URL (moto)."""
    import boto3

    bucket, _, key = uri[len("s3://"):].partition("/")
    return boto3.client("s3"), bucket, key


def write_json_atomic(path: str | Path, payload: dict) -> None:
    """Replace `path` with `payload` in one rename, so a reader never sees half a file.

    An ``s3://`` URI is written with one PUT (whole-object replacement): a job on a cluster
    leaves its heartbeat where the supervisor, on another machine, reads it."""
    if str(path).startswith("s3://"):
        client, bucket, key = _s3_object(str(path))
        client.put_object(Bucket=bucket, Key=key, Body=json.dumps(payload, default=str).encode())
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, default=str, indent=1))
    os.replace(tmp, path)


def write_heartbeat(cfg: JobConfig, payload: dict) -> None:
    """The heartbeat JSON, and its Prometheus text when the job was given `--metrics-file`."""
    write_json_atomic(cfg.heartbeat, payload)
    if cfg.metrics_file:
        path = Path(cfg.metrics_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(heartbeat_metrics(payload))
        os.replace(tmp, path)


def read_heartbeat(path: str | Path) -> Optional[dict]:
    """The last heartbeat written at `path`, or None if there is none (or it is unreadable)."""
    if str(path).startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        client, bucket, key = _s3_object(str(path))
        try:
            return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except (ClientError, BotoCoreError, ValueError):
            return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def heartbeat_payload(progress: Optional[dict], sink, status: str,
                      cfg: JobConfig, error: Optional[str] = None,
                      batch_running_since: Optional[str] = None) -> dict:
    """The supervisor's view of the job: progress of the last batch, sink figures, counters.

    `sink` is the job's `sinks.SessionSink` (its batch figures, counters and live sessions).
    """
    now = dt.datetime.now(dt.timezone.utc)
    p = progress_dict(progress)
    batch_id = p.get("batchId")
    stats = sink.by_batch.get(batch_id) if batch_id is not None else None
    stats = stats or sink.last
    state_ops = p.get("stateOperators") or []
    durations = p.get("durationMs") or {}
    return {
        "status": status,
        "pid": os.getpid(),
        "query_name": QUERY_NAME,
        "query_id": p.get("id"),
        "run_id": p.get("runId"),
        "source": cfg.source,
        "checkpoint": cfg.checkpoint,
        "batch_id": batch_id,
        "batch_time": p.get("timestamp"),
        "input_rows": p.get("numInputRows"),
        "input_rows_per_second": _finite(p.get("inputRowsPerSecond")),
        "processed_rows_per_second": _finite(p.get("processedRowsPerSecond")),
        "batch_duration_ms": durations.get("triggerExecution"),
        "watermark": (p.get("eventTime") or {}).get("watermark"),
        # Spark's state rows are buckets of sessions (see `stateful`); the sessions live in
        # them are counted by the buckets themselves
        "state_buckets": cfg.state_buckets,
        "state_rows": sum(int(op.get("numRowsTotal", 0)) for op in state_ops),
        "live_sessions": sum(sink.live.values()),
        "live_sessions_by_bucket": {str(k): v for k, v in sorted(sink.live.items())},
        "state_memory_bytes": sum(int(op.get("memoryUsedBytes", 0)) for op in state_ops),
        "sessions_written": stats.sessions_written if stats else None,
        "sessions_closed": stats.sessions_closed if stats else None,
        "latency_p50_ms": stats.latency_p50_ms if stats else None,
        "latency_p95_ms": stats.latency_p95_ms if stats else None,
        # the counters' ledger: the last batch the sink finished and what it refused
        "sink_batch_id": sink.last.batch_id if sink.last else None,
        "quarantine_batch": dict(sink.last.quarantine) if sink.last else {},
        "quarantine_total": dict(sink.totals),
        "late_events_total": sink.totals.get("late beyond watermark", 0),
        # when the batch running now started (ISO time), None between batches
        "batch_running_since": batch_running_since,
        "last_update_time": now.isoformat(),
        "error": error,
    }


def progress_dict(progress) -> dict:
    """A query progress as plain JSON values (PySpark 4 hands out an object with UUIDs)."""
    if progress is None:
        return {}
    if hasattr(progress, "json"):
        return json.loads(progress.json)
    return json.loads(json.dumps(dict(progress), default=str))


def _finite(value) -> Optional[float]:
    return round(float(value), 1) if value is not None and math.isfinite(value) else None


def supervise(query, sink, cfg: JobConfig, stop: threading.Event,
              poll_seconds: float = 0.25, refresh_seconds: float = 5.0,
              on_heartbeat: Optional[Callable[[dict], None]] = None) -> int:
    """Write a heartbeat after every batch until the query ends; the exit code of the job.

    Between batches' heartbeats it is refreshed every `refresh_seconds`: `idle` while the query
    waits for data, and while a batch runs with the time it was first seen running
    (`batch_running_since`), so the supervisor tells a long batch from a hung one and a live
    driver from a stuck one. `on_heartbeat` sees each payload written (Pipes reports).
    """
    def beat(payload: dict) -> None:
        write_heartbeat(cfg, payload)
        if on_heartbeat is not None:
            on_heartbeat(payload)

    last_seen = None
    last_write = time.monotonic()
    batch_since: Optional[str] = None
    beat(heartbeat_payload(None, sink, "starting", cfg))
    while query.isActive:
        if stop.is_set():
            query.stop()
            break
        progress = query.lastProgress
        fresh = progress is not None and progress.get("timestamp") != last_seen
        if fresh:
            sink.progress = progress
            batch_since = None
        due = not fresh and time.monotonic() - last_write >= refresh_seconds
        in_batch = due and bool(query.status.get("isTriggerActive", False))
        # before its first batch a job says nothing more unless that batch runs: a job that
        # never gets going lets its `starting` heartbeat age past the startup grace
        if fresh or (due and (progress is not None or in_batch)):
            if in_batch and batch_since is None:
                batch_since = dt.datetime.now(dt.timezone.utc).isoformat()
            elif not in_batch:
                batch_since = None
            status = ("starting" if progress is None else "running" if fresh or in_batch
                      else "idle")
            if progress is not None:
                last_seen = progress.get("timestamp")
            last_write = time.monotonic()
            with sink.lock:
                beat(heartbeat_payload(progress, sink, status, cfg,
                                       batch_running_since=batch_since))
        query.awaitTermination(poll_seconds)
    error = query.exception()
    status = "failed" if error else "stopped"
    with sink.lock:
        beat(heartbeat_payload(query.lastProgress, sink, status, cfg,
                               error=str(error) if error else None))
    return 1 if error else 0
