"""The live session job: clickstream in, session features in Redis and closed sessions in the lake.

A Spark Structured Streaming program (`python -m streaming_jobs.session_job --help`, or
`spark-submit streaming_jobs/session_job.py ...`), no Dagster inside.

Flow of one micro-batch:
1. source: JSON lines from a landing directory (what Kinesis Firehose writes; local or s3a://)
   or Kinesis Data Streams through `streaming_jobs.kinesis_source`;
2. `prepare_lines` (mapInPandas): parse each line, judge it with the event contract
   (`contract.validate_events`), and pack the chunk's rows into one JSON column, one row per
   state bucket (a hash of session_id modulo `--state-buckets`); a bad row keeps its reason;
3. event-time watermark on event_time, then `applyInPandasWithState` keyed by the state
   bucket: Python is called once per bucket per batch
   instead of once per session, and runs `session_fold.SessionFolder` for every session inside
   (dedupe, lateness, out-of-order re-folds) over `session_state`, the one definition of session
   features. Each session keeps its own event-time timeout (its latest event plus
   `--session-timeout`); every call closes the bucket's sessions whose timeout the watermark
   has passed, and the bucket's EventTimeTimeout is its earliest session timeout;
4. `SessionSink` in foreachBatch: features to Redis in Feast's online layout with a version guard
   (a Lua script: a replayed batch never regresses a session), closed sessions appended to the
   lake's `session_features_stream` table, refused rows to `stream_quarantine`;
5. a heartbeat JSON (atomically replaced) that the Dagster supervisor reads, with the open
   sessions each bucket last reported (`live_sessions`; Spark's state rows count buckets):
   written by the sink before each batch commits (its counters stay exact across kills),
   refreshed with Spark's progress figures after the batch, and every few seconds while the
   query idles.

Late rows: Spark would drop rows behind the watermark before the state function sees them,
silently. The function needs them (to count and quarantine them), so the watermarked column is
projected away before the grouping and an always-null guard column carries the watermark
metadata instead: Spark still computes the watermark and fires event-time timeouts, and the
function decides lateness itself with the batch's watermark (`state.getCurrentWatermarkMs`).

Exactly-once: Spark replays an unfinished batch with the same offsets, the same state version
and the same watermark, so it produces the same output; Redis writes are guarded by the
session's version (latest event time, events applied), parquet files are named by batch id.

State cost: a bucket's state (all its live sessions, about 2 KB each with their re-fold buffers)
is read and rewritten whole in every batch that touches the bucket, and under steady traffic
every bucket is touched every batch, so each batch pays for every live session: measured on 2
cores, about 40-50 us of batch time per live session (14,000 live sessions, 50 MB of state by
Spark's count, made each batch 0.5-0.6 s longer). A store that rewrites only the sessions a
batch touches (transformWithStateInPandas' MapState) cost about 200 us per touched session
here, so buckets win while a batch touches more than about a quarter of the live sessions (this
box's traffic); for millions of mostly idle sessions MapState is the better trade. The bucket
count is kept in the checkpoint (`STATE_LAYOUT_FILE`): resuming with another count is refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import signal
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pandas as pd

from streaming_jobs import online_layout as layout
from streaming_jobs.contract import COLUMNS, QUARANTINE_COLUMNS, validate_events
from streaming_jobs.session_fold import (
    CLOSED,
    FEATURES,
    LIVE,
    QUARANTINE,
    REC,
    SessionFolder,
    decode_bucket,
    encode_bucket,
    to_json,
)
from streaming_jobs.session_state import (
    FEATURE_NAMES,
    OUTPUT_COLUMNS,
    SESSION_FEATURES,
)

VIEW = "session_fv"
JOIN_KEY = "session_id"
QUERY_NAME = "session_features_stream"
# Closed sessions go to their own table: the batch `session_snapshots` asset replaces its
# `session_features` partitions whole on every backfill and must not delete what the stream wrote.
CLOSED_SESSIONS_TABLE = "session_features_stream"
# One packed column in: the stateful step converts each column to pandas per bucket (measured:
# one JSON column costs less, JVM and Python together, than the contract's columns typed), and
# one row per bucket and chunk rather than per event (see `prepare_frame`).
PREPARED_SCHEMA = "bucket int, event_time timestamp, recs string"
_SID, _T = REC["session_id"], REC["event_time"]
# A bucket's output payloads as one JSON array: one row per bucket for Spark and the sink to
# carry, not one per payload.
OUTPUT_SCHEMA = "payloads string"
# The state of one bucket: the bucket count it was hashed with (a restart with another count is
# refused instead of splitting sessions across buckets) and its live sessions as
# `session_fold.encode_bucket` writes them.
BUCKET_STATE_SCHEMA = "buckets int, sessions string, states binary"
ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
# EventTimeWatermark.delayKey: the column metadata that marks an event-time column
WATERMARK_DELAY_KEY = "spark.watermarkDelayMs"
REASON_MALFORMED = "malformed JSON"
REASON_FUTURE = "event_time in the future"
_TIME_COLUMNS = ("event_time", "received_time")


# -- configuration --------------------------------------------------------------------------------
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
                                description=__doc__.splitlines()[0])
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
        batch_log=a.batch_log, master=a.master, java_options=a.java_options)


# -- step 2: parse and judge each line ------------------------------------------------------------
def state_bucket(session_id: Optional[str], buckets: int) -> int:
    """The state group of a session: CRC-32 of its UTF-8 id modulo `buckets` (no id: group 0).

    Computed here, on the contract's session_id, so that `prepare_frame` can pack a chunk's rows
    by bucket; the checkpoint records the hash (`BUCKET_HASH`).
    """
    if session_id is None:
        return 0
    return zlib.crc32(session_id.encode("utf-8", "surrogatepass")) % buckets


def _micros(series: pd.Series) -> list:
    values = series.astype("datetime64[us, UTC]")
    ints = values.to_numpy(dtype="datetime64[us]").astype(np.int64).tolist()
    missing = values.isna().to_numpy()
    return [None if m else v for v, m in zip(ints, missing)] if missing.any() else ints


def _plain(series: pd.Series) -> list:
    """Python values with every flavour of missing as None."""
    return series.to_numpy(dtype=object, na_value=None).tolist()


def pack_events(events: pd.DataFrame) -> list[tuple]:
    """Contract-typed events as tuples in COLUMNS order, times in microseconds."""
    cols = []
    for name in COLUMNS:
        col = events[name]
        cols.append(_micros(col) if name in _TIME_COLUMNS else _plain(col))
    return list(zip(*cols))


def _validate(frame: pd.DataFrame):
    """The contract's verdict on a chunk; should a row make the contract itself fail, the chunk
    is judged row by row and only the rows that fail are refused ("unreadable event")."""
    from streaming_jobs.contract import Validated

    try:
        return validate_events(frame)
    except Exception:  # noqa: BLE001 - one odd row must not stop the stream
        pass
    events, refused = [], []
    for i in range(len(frame)):
        row = frame.iloc[[i]]
        try:
            checked = validate_events(row)
        except Exception as err:  # noqa: BLE001
            text = {c: (None if c not in row or pd.isna(row[c].iloc[0]) else str(row[c].iloc[0]))
                    for c in COLUMNS}
            refused.append(pd.DataFrame([{**text, "quarantine_reason":
                                          f"unreadable event ({type(err).__name__})"}]))
            continue
        events.append(checked.events)
        refused.append(checked.quarantine)
    from streaming_jobs.contract import empty_events, empty_quarantine

    return Validated(pd.concat(events or [empty_events()], ignore_index=True),
                     pd.concat(refused or [empty_quarantine()], ignore_index=True))


def _parse(lines: list) -> list[Optional[dict]]:
    """Each line as `json.loads` reads it when that is a JSON object, else None.

    The decoder's scanner is called directly (json.loads' own frames cost as much as scanning
    a line); a line it does not read whole, as one value from its first character, goes through
    json.loads, so the verdict is json.loads' own.
    """
    # made per call: a module-level scanner would not pickle with the job's functions
    scan = json.JSONDecoder().scan_once
    out: list[Optional[dict]] = []
    append = out.append
    for line in lines:
        try:
            obj, end = scan(line, 0)
        except Exception:  # noqa: BLE001 - json.loads below gives the verdict
            end = None
        if end is None or end != len(line):
            try:
                obj = json.loads(line) if line else None
            except (ValueError, TypeError):
                obj = None
        append(obj if type(obj) is dict else None)
    return out


def prepare_frame(lines: pd.Series, now_us: int, max_skew_us: int, buckets: int,
                  arrival: Optional[pd.Series] = None) -> pd.DataFrame:
    """Judge raw JSON lines, never raising, and pack them by state bucket: (bucket, event_time,
    recs) rows.

    `recs` is a JSON array of the bucket's items: a packed event (a list in COLUMNS order, see
    `pack_events`) or, for a refused line, `{"rec": [its fields as text], "reason": why}`.
    `event_time` is the latest one of the row's valid events (it drives the watermark);
    refused lines count for none, so a garbled timestamp cannot move it.

    One row per bucket rather than per event: Spark carries, shuffles and converts a few rows
    per chunk instead of one per event, and the events are encoded in one call per bucket.
    """
    parsed = _parse(lines.tolist())
    ok = np.array([p is not None for p in parsed], dtype=bool)
    items: list = []  # (session_id, item): malformed lines, valid events, refused events

    if not ok.all():
        for raw in lines[~ok].astype(object).tolist():
            items.append((None, {"rec": [None] * (len(COLUMNS) - 1)
                                 + [None if raw is None else str(raw)[:10_000]],
                                 "reason": REASON_MALFORMED}))
    if ok.any():
        frame = pd.DataFrame.from_records([p for p in parsed if p is not None])
        if arrival is not None and "received_time" not in frame:
            frame["received_time"] = arrival[ok].to_numpy()
        checked = _validate(frame)
        events = checked.events
        t_us = (events["event_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us")
        future = (t_us > now_us + max_skew_us).to_numpy()
        if future.any():
            bad = events[future]
            q = pd.DataFrame({c: bad[c].astype("string") for c in COLUMNS})
            q["quarantine_reason"] = REASON_FUTURE
            events = events[~future]
            quarantine = pd.concat([checked.quarantine, q], ignore_index=True)
        else:
            quarantine = checked.quarantine
        items.extend((rec[_SID], rec) for rec in pack_events(events))
        if len(quarantine):
            for rec, why in zip(zip(*[_plain(quarantine[c]) for c in COLUMNS]),
                                _plain(quarantine["quarantine_reason"])):
                items.append((rec[_SID], {"rec": rec, "reason": why}))
    return _by_bucket(items, buckets)


def _by_bucket(items: list, buckets: int) -> pd.DataFrame:
    """`prepare_frame`'s rows from its (session_id, item) pairs, items kept in their order."""
    groups: dict[int, list] = {}
    latest: dict[int, int] = {}
    bucket_of: dict = {}
    for session_id, item in items:
        key = bucket_of.get(session_id)
        if key is None:
            key = bucket_of[session_id] = state_bucket(session_id, buckets)
        group = groups.get(key)
        if group is None:
            groups[key] = [item]
        else:
            group.append(item)
        if type(item) is tuple and (key not in latest or item[_T] > latest[key]):
            latest[key] = item[_T]  # a valid event
    keys = list(groups)
    times = np.array([latest.get(k) for k in keys], dtype="datetime64[us]")
    return pd.DataFrame({
        "bucket": np.array(keys, dtype=np.int32),
        "event_time": pd.Series(times).dt.tz_localize("UTC"),
        "recs": [to_json(groups[k]) for k in keys]})


def prepare_lines(max_skew_us: int, buckets: int):
    """The mapInPandas function over the source's `value` (and optional `arrival`) columns."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            now_us = time.time_ns() // 1000
            arrival = batch["arrival"] if "arrival" in batch else None
            yield prepare_frame(batch["value"], now_us, max_skew_us, buckets, arrival)

    return run


# -- step 3: the stateful function ----------------------------------------------------------------
def bucket_function(timeout_ms: int, max_buffered: int, buckets: int):
    """The applyInPandasWithState function: one bucket's batch through `SessionFolder`.

    Called once per bucket that has events in the batch or whose earliest session timeout the
    watermark has passed; every session inside is advanced (or closed) by the same
    `SessionFolder.update` a per-session grouping would call.
    """
    folder = SessionFolder(timeout_ms, max_buffered)

    def run(key, frames, state):
        watermark_ms = state.getCurrentWatermarkMs()
        sessions: dict = {}
        if state.exists:
            stored_buckets, index, states = state.get
            if stored_buckets != buckets:
                raise ValueError(
                    f"the checkpoint's session state was hashed into {stored_buckets} buckets, "
                    f"this job into {buckets}: restart it with --state-buckets {stored_buckets}")
            sessions = decode_bucket(index, states)
        items: dict = {}
        if not state.hasTimedOut:
            for frame in frames:
                if not len(frame):
                    continue
                for packed in json.loads("[" + ",".join(frame["recs"].tolist()) + "]"):
                    for item in packed:
                        session_id = (item[_SID] if type(item) is list
                                      else item["rec"][_SID])
                        group = items.get(session_id)
                        if group is None:
                            items[session_id] = [item]
                        else:
                            group.append(item)
        update = folder.update_bucket(items, sessions, watermark_ms)
        if not update.sessions:
            if state.exists:
                state.remove()
        else:
            if update.changed or not state.exists:
                state.update((buckets, *encode_bucket(update.sessions)))
            state.setTimeoutTimestamp(update.timeout_ms)
        # every call reports its bucket's live sessions (0 when its state went): the sink keeps
        # the latest count per bucket, and an untouched bucket's count cannot have changed
        update.outputs.append(to_json([LIVE, int(key[0]), len(update.sessions)]))
        yield pd.DataFrame({"payloads": ["[" + ",".join(update.outputs) + "]"]})

    return run


# -- step 4: the sink -----------------------------------------------------------------------------
# Write a session's row only when it is newer than the stored one. Versions are
# "<latest event time us>:<events applied>", compared as numbers (both stay below 2^53, exact
# in Lua's doubles): a later latest event wins, and for the same latest event more events win (an
# out-of-order event re-folded in). A replayed batch carries equal versions and writes nothing.
GUARDED_HSET = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ct, cn = string.match(cur, '^(%-?%d+):(%d+)$')
  local nt, nn = string.match(ARGV[2], '^(%-?%d+):(%d+)$')
  ct, cn, nt, nn = tonumber(ct), tonumber(cn), tonumber(nt), tonumber(nn)
  if ct > nt or (ct == nt and cn >= nn) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], unpack(ARGV, 4))
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""

_COL = {name: i for i, name in enumerate(OUTPUT_COLUMNS)}
LATENCY_BUCKET_MS = 50


def _percentile(values: np.ndarray, q: float) -> Optional[float]:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


@dataclass
class BatchStats:
    """What the sink did with one batch; the heartbeat and the batch log report it."""

    batch_id: int
    output_rows: int = 0
    sessions_written: int = 0
    sessions_skipped: int = 0
    sessions_closed: int = 0
    quarantine: dict = field(default_factory=dict)
    latency_p50_ms: Optional[float] = None
    latency_p95_ms: Optional[float] = None
    latency_hist: dict = field(default_factory=dict)
    landed_at: float = 0.0
    sink_seconds: float = 0.0
    live_sessions: dict = field(default_factory=dict)  # bucket -> its live sessions after


class SessionSink:
    """foreachBatch: Redis (guarded), closed sessions and quarantine to the lake, counters."""

    def __init__(self, cfg: JobConfig, totals: Optional[dict] = None,
                 last_batch: Optional[BatchStats] = None, live: Optional[dict] = None) -> None:
        self.cfg = cfg
        self._client = None
        self._script = None
        self._fields = [layout.field(VIEW, name) for name in FEATURE_NAMES]
        self._kinds = [kind for _, kind, _ in SESSION_FEATURES]
        self._positions = [_COL[name] for name in FEATURE_NAMES]
        self._ts_field = layout.ts_field(VIEW)
        self._v_field = layout.version_field(VIEW)
        self._fs = None
        self.lock = threading.Lock()
        # Cumulative quarantine counts, kept right when a batch is replayed after a crash.
        self.totals: dict[str, int] = dict(totals or {})
        # Live sessions per state bucket, as each bucket last reported (a gauge: a replayed batch
        # reports the same counts again).
        self.live: dict[int, int] = {int(k): int(v) for k, v in (live or {}).items()}
        self.last: Optional[BatchStats] = last_batch
        self.by_batch: dict[int, BatchStats] = {}
        # the query's latest progress, kept by `supervise` for the heartbeats the sink writes
        self.progress = None

    # -- clients ---------------------------------------------------------------------------------
    def _redis(self):
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.cfg.redis_url)
            self._script = self._client.register_script(GUARDED_HSET)
        return self._client

    def _filesystem(self):
        if self._fs is None:
            import pyarrow.fs as pafs

            if self.cfg.lake.startswith("s3://"):
                self._fs = pafs.S3FileSystem(endpoint_override=self.cfg.s3_endpoint,
                                             region=os.environ.get("AWS_DEFAULT_REGION",
                                                                   "us-east-1"))
            else:
                self._fs = pafs.LocalFileSystem()
        return self._fs

    def _path(self, table: str, date: str, name: str) -> str:
        root = self.cfg.lake.rstrip("/")
        if root.startswith("s3://"):
            root = root[len("s3://"):]
        else:
            root = str(Path(root).resolve())
        return f"{root}/{table}/date={date}/{name}"

    def _write_parquet(self, table, path: str) -> None:
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        fs = self._filesystem()
        directory = path.rsplit("/", 1)[0]
        fs.create_dir(directory, recursive=True)
        if isinstance(fs, pafs.LocalFileSystem):
            tmp = f"{directory}/.{path.rsplit('/', 1)[1]}.tmp"
            pq.write_table(table, tmp, filesystem=fs)
            fs.move(tmp, path)  # atomic rename: readers never see half a file
        else:
            pq.write_table(table, path, filesystem=fs)

    # -- the batch ---------------------------------------------------------------------------------
    def __call__(self, df, batch_id: int) -> None:
        started = time.time()
        frame = df.toPandas()  # the only action on this batch: the stateful step runs once
        stats = self.write(frame, batch_id, started)
        with self.lock:
            self._account(stats)
            # Before Spark commits the batch: a kill before this line replays the batch, a kill
            # after it finds the batch's counts here and replaces them, never adding them twice.
            write_json_atomic(self.cfg.heartbeat, heartbeat_payload(
                self.progress, self, "running", self.cfg))

    def write(self, frame: pd.DataFrame, batch_id: int, started: Optional[float] = None
              ) -> BatchStats:
        """Write one batch's output payloads (`[kind, session_id, data]`; a row holds a JSON
        array of one bucket's); returns what was done."""
        started = started or time.time()
        stats = BatchStats(batch_id=batch_id)
        by_kind: dict[str, list] = {FEATURES: [], CLOSED: [], QUARANTINE: []}
        for payloads in frame["payloads"].tolist() if len(frame) else []:
            for kind, key, data in json.loads(payloads):
                if kind == LIVE:
                    stats.live_sessions[key] = data
                else:
                    by_kind[kind].append(data)
        stats.output_rows = sum(len(v) for v in by_kind.values())
        features, closed, quarantined = by_kind[FEATURES], by_kind[CLOSED], by_kind[QUARANTINE]

        received: list[int] = []
        if features:
            rows = []
            for data in features:
                rows.append(data["row"])
                received.extend(data["received"])
            written = self._write_redis(rows)
            stats.sessions_written = written
            stats.sessions_skipped = len(rows) - written
        stats.landed_at = time.time()
        if received:
            latency = (stats.landed_at * 1e3 - np.asarray(received, dtype=np.float64) / 1e3)
            stats.latency_p50_ms = _percentile(latency, 50)
            stats.latency_p95_ms = _percentile(latency, 95)
            buckets = np.floor_divide(np.clip(latency, 0, None), LATENCY_BUCKET_MS).astype(np.int64)
            values, counts = np.unique(buckets, return_counts=True)
            stats.latency_hist = {int(v) * LATENCY_BUCKET_MS: int(c)
                                  for v, c in zip(values, counts)}
        if closed:
            stats.sessions_closed = self._write_closed([d["row"] for d in closed], batch_id)
        if quarantined:
            stats.quarantine = self._write_quarantine(quarantined, batch_id)
        stats.sink_seconds = round(time.time() - started, 3)
        if self.cfg.batch_log:
            with open(self.cfg.batch_log, "a") as fh:
                fh.write(json.dumps(asdict(stats)) + "\n")
        return stats

    def _write_redis(self, rows: list[list]) -> int:
        client = self._redis()
        project = self.cfg.project
        ttl = str(self.cfg.redis_ttl_seconds)
        encode = layout.encode_value
        written = 0
        for start in range(0, len(rows), 2000):
            pipe = client.pipeline(transaction=False)
            for row in rows[start:start + 2000]:
                last_t = row[_COL["last_event_time"]]
                args: list[Any] = [self._v_field, f"{last_t}:{row[_COL['version']]}", ttl,
                                   self._ts_field, layout.encode_timestamp(last_t)]
                for fld, kind, pos in zip(self._fields, self._kinds, self._positions):
                    args.append(fld)
                    args.append(encode(kind, row[pos]))
                self._script(keys=[layout.entity_key(JOIN_KEY, row[_COL["session_id"]], project)],
                             args=args, client=pipe)
            written += sum(int(r) for r in pipe.execute())
        return written

    def _write_closed(self, rows: list[list], batch_id: int) -> int:
        import pyarrow as pa

        frame = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
        frame["event_timestamp"] = pd.to_datetime(frame["last_event_time"], unit="us", utc=True)
        frame["date"] = pd.to_datetime(frame["first_event_time"], unit="us",
                                       utc=True).dt.strftime("%Y-%m-%d")
        schema = closed_session_schema()
        for date, part in frame.groupby("date", sort=True):
            table = pa.Table.from_pandas(part[schema.names], schema=schema, preserve_index=False)
            self._write_parquet(table, self._path(CLOSED_SESSIONS_TABLE, date,
                                                  f"stream-{batch_id:010d}.parquet"))
        return len(frame)

    def _write_quarantine(self, refused: list[list], batch_id: int) -> dict[str, int]:
        import pyarrow as pa

        from streaming_jobs.contract import quarantine_arrow_schema

        records = []
        for rec, reason in refused:
            records.append([None if v is None else _text(name, v) for name, v in zip(COLUMNS, rec)]
                           + [reason])
        frame = pd.DataFrame(records, columns=list(QUARANTINE_COLUMNS))
        when = pd.to_datetime(frame["event_time"], utc=True, errors="coerce", format="mixed")
        when = when.fillna(pd.to_datetime(frame["received_time"], utc=True, errors="coerce",
                                          format="mixed"))
        frame["date"] = when.dt.strftime("%Y-%m-%d").fillna("undated")
        schema = quarantine_arrow_schema()
        for date, part in frame.groupby("date", sort=True):
            table = pa.Table.from_pandas(part[schema.names], schema=schema, preserve_index=False)
            self._write_parquet(table, self._path("stream_quarantine", date,
                                                  f"batch-{batch_id:010d}.parquet"))
        return {str(k): int(v) for k, v in frame["quarantine_reason"].value_counts().items()}

    def _account(self, stats: BatchStats) -> None:
        # A batch replayed after a crash replaces its earlier counts instead of adding twice.
        if self.last is not None and stats.batch_id <= self.last.batch_id:
            for reason, n in self.last.quarantine.items():
                self.totals[reason] = self.totals.get(reason, 0) - n
        for reason, n in stats.quarantine.items():
            self.totals[reason] = self.totals.get(reason, 0) + n
        self.live.update(stats.live_sessions)
        self.last = stats
        self.by_batch[stats.batch_id] = stats
        for old in sorted(self.by_batch)[:-50]:
            del self.by_batch[old]


def _text(name: str, value: Any) -> str:
    """A packed field as the quarantine table's text (times back to ISO)."""
    if name in _TIME_COLUMNS and isinstance(value, int):
        return pd.Timestamp(value, unit="us", tz="UTC").isoformat()
    return str(value)


def closed_session_schema():
    """The offline session_features table: session_id, event_timestamp, then every feature."""
    import pyarrow as pa

    types = {"string": pa.string(), "int": pa.int64(), "float": pa.float64()}
    return pa.schema([("session_id", pa.string()), ("event_timestamp", pa.timestamp("us", "UTC"))]
                     + [(name, types[kind]) for name, kind, _ in SESSION_FEATURES])


# -- step 5: the heartbeat ------------------------------------------------------------------------
def write_json_atomic(path: str | Path, payload: dict) -> None:
    """Replace `path` with `payload` in one rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, default=str, indent=1))
    os.replace(tmp, path)


def read_heartbeat(path: str | Path) -> Optional[dict]:
    """The last heartbeat written at `path`, or None if there is none (or it is unreadable)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def heartbeat_payload(progress: Optional[dict], sink: SessionSink, status: str,
                      cfg: JobConfig, error: Optional[str] = None) -> dict:
    """The supervisor's view of the job: progress of the last batch, sink figures, counters."""
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
        # Spark's state rows are buckets of sessions (see the module docstring); the sessions
        # live in them are counted by the buckets themselves
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


# -- the query ------------------------------------------------------------------------------------
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
            # Measured on 2 cores: C2 kept compiling for minutes (micro-batches keep bringing
            # generated classes; about 1 s of compile time per second), and C1 alone cut the
            # JVM's CPU per event by about a quarter: the JVM's share of this job is too small
            # for C2's faster code to pay for its compiling.
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
    # See the module docstring: the real event_time must not reach the grouping, or Spark drops
    # late rows unseen; the null guard column keeps the watermark visible to the operator (a
    # null long: Spark compares it to the watermark in us, and it converts to pandas cheaply).
    guard = F.lit(None).cast("long").alias("_watermark_guard",
                                           metadata={WATERMARK_DELAY_KEY: delay_ms})
    keyed = watermarked.select("bucket", "recs", guard)
    return keyed.groupBy("bucket").applyInPandasWithState(
        bucket_function(duration_ms(cfg.session_timeout), cfg.max_buffered_events,
                        cfg.state_buckets),
        OUTPUT_SCHEMA, BUCKET_STATE_SCHEMA, "update", "EventTimeTimeout")


# Written into the checkpoint beside Spark's own files: how the session state is bucketed.
STATE_LAYOUT_FILE = "session_state_layout.json"
# How `state_bucket` hashes a session id. Checkpoints written before it was recorded hashed with
# Spark's xxhash64 and cannot be resumed: their sessions would be looked for in other buckets.
BUCKET_HASH = "crc32-utf8"


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


def supervise(query, sink: SessionSink, cfg: JobConfig, stop: threading.Event,
              poll_seconds: float = 0.25, idle_refresh_seconds: float = 5.0) -> int:
    """Write a heartbeat after every batch until the query ends; the exit code of the job.

    An idle query (waiting for data, no batch running) refreshes its heartbeat every few
    seconds, so the supervisor tells idle from hung: a batch that never finishes stops the
    heartbeat, and it goes stale.
    """
    last_seen = None
    last_write = time.monotonic()
    write_json_atomic(cfg.heartbeat, heartbeat_payload(None, sink, "starting", cfg))
    while query.isActive:
        if stop.is_set():
            query.stop()
            break
        progress = query.lastProgress
        fresh = progress is not None and progress.get("timestamp") != last_seen
        if fresh:
            sink.progress = progress
        idle = (not fresh and progress is not None
                and time.monotonic() - last_write >= idle_refresh_seconds
                and not query.status.get("isTriggerActive", True))
        if fresh or idle:
            last_seen = progress.get("timestamp")
            last_write = time.monotonic()
            with sink.lock:
                write_json_atomic(cfg.heartbeat, heartbeat_payload(
                    progress, sink, "running" if fresh else "idle", cfg))
        query.awaitTermination(poll_seconds)
    error = query.exception()
    status = "failed" if error else "stopped"
    with sink.lock:
        write_json_atomic(cfg.heartbeat, heartbeat_payload(
            query.lastProgress, sink, status, cfg, error=str(error) if error else None))
    return 1 if error else 0


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
