"""The decision log: every scoring decision as one JSON line, written off the request path.

The exposure log A/B analysis joins outcomes to, and the served-features log. `append` serializes
on the caller's thread and queues the line; a background thread writes the queue every
`flush_interval_s` to ``{directory}/date=YYYY-MM-DD/decisions-<pid>.jsonl`` (one file per process
and UTC day). A full queue drops the record and counts it rather than slow a request down.

With an ``s3://bucket/prefix`` directory (prod: the stack's `DecisionLogUri`) each flush is one
object, ``{prefix}/date=YYYY-MM-DD/decisions-<pid>-<n>.jsonl`` (S3 has no append), every
`S3_FLUSH_INTERVAL_S` unless told otherwise; `intent_resources.decision_log` reads either layout.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import queue
import threading
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)


def _default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def log_path(directory: str | Path, when: dt.datetime, pid: int | None = None) -> Path:
    """The file a record of time `when` goes to."""
    return Path(directory) / f"date={when.strftime('%Y-%m-%d')}" / \
        f"decisions-{pid or os.getpid()}.jsonl"


_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
# an object per flush: a request's worth of records per PUT would cost more than it logs
S3_FLUSH_INTERVAL_S = 10.0


class DecisionLog:
    """Buffered JSON-lines writer for decision records."""

    def __init__(self, directory: str | Path, flush_interval_s: float | None = None,
                 max_queue: int = 100_000) -> None:
        self.s3_uri = str(directory).rstrip("/") if str(directory).startswith("s3://") else None
        self.directory = Path(directory) if self.s3_uri is None else None
        self.flush_interval_s = flush_interval_s if flush_interval_s is not None else (
            0.2 if self.s3_uri is None else S3_FLUSH_INTERVAL_S)
        self._s3 = None       # the writer thread's boto3 client, made on first use
        self._objects = 0     # objects written to S3 by this process
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._max_queue = max_queue
        # each counter has one writing thread: appended (callers' loop), processed (the writer)
        self._appended = 0
        self._processed = 0
        self.dropped = 0   # queue full (caller's thread)
        self.lost = 0      # write failed (writer thread)
        self.written = 0
        self._stop = threading.Event()
        self._wake = threading.Event()     # set: write the queue now (flush, close)
        self._flushed = threading.Condition()
        self._day: tuple[dt.date, Path] | None = None   # the current day's file
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def _path(self, when: dt.datetime) -> Path | str:
        """The day's file, or (S3) the day's key prefix."""
        day = self._day
        if day is None or day[0] != when.date():
            where = log_path(self.directory, when) if self.s3_uri is None else \
                f"{self.s3_uri}/date={when.strftime('%Y-%m-%d')}"
            day = self._day = (when.date(), where)
        return day[1]

    def append(self, record: dict[str, Any]) -> None:
        """Queue a record (stamped with the time it is appended if it has no `ts`); never blocks."""
        if self._appended - self._processed >= self._max_queue:
            self.dropped += 1
            return
        when = dt.datetime.now(dt.timezone.utc)
        record.setdefault("ts", when.isoformat())
        try:
            line = orjson.dumps(record, default=_default, option=_DUMPS_OPTIONS)
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits, which orjson refuses
            line = json.dumps(_nulls(record), default=_default, separators=(",", ":")).encode()
        self._appended += 1
        self._queue.put((self._path(when), line))

    def _drain(self) -> None:
        records = []
        while True:
            try:
                records.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not records:
            return
        by_file: dict[Path | str, list[bytes]] = {}
        for path, line in records:
            by_file.setdefault(path, []).append(line)
        for path, lines in by_file.items():
            try:
                if isinstance(path, str):
                    self._put(path, b"\n".join(lines) + b"\n")
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with open(path, "ab") as fh:
                        fh.write(b"\n".join(lines) + b"\n")
                self.written += len(lines)
            except Exception as error:  # OSError, or boto3's errors: counted, logged, never raised
                self.lost += len(lines)
                log.error("decision log %s not written (%d records lost): %s", path,
                          len(lines), error)
        self._processed += len(records)

    def _put(self, day_prefix: str, body: bytes) -> None:
        """One object under the day's prefix (``s3://bucket/prefix/date=...``)."""
        if self._s3 is None:
            import boto3   # follows AWS_ENDPOINT_URL (moto on the local stack)

            self._s3 = boto3.client("s3")
        bucket, _, prefix = day_prefix[len("s3://"):].partition("/")
        self._objects += 1
        key = f"{prefix}/decisions-{os.getpid()}-{self._objects:08d}.jsonl"
        self._s3.put_object(Bucket=bucket, Key=key, Body=body)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self._drain()
            with self._flushed:
                self._flushed.notify_all()
        self._drain()

    def flush(self, timeout_s: float = 5.0) -> None:
        """Write everything appended so far now, and wait until it is written."""
        with self._flushed:
            target = self._appended
            self._wake.set()
            self._flushed.wait_for(lambda: self._processed >= target, timeout=timeout_s)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)


def _nulls(obj: Any) -> Any:
    """NaN and infinities as null, as orjson writes them: JSON has no such numbers."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nulls(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nulls(v) for v in obj]
    return obj
