"""The job's sink: session features to Redis, closed sessions and refused rows to the lake.

`SessionSink` is the query's foreachBatch. Redis writes go through a Lua version guard, so a
batch Spark replays after a crash never regresses a session; parquet files are named by batch
id, so a replayed batch replaces its own files. Its counters survive kills through the heartbeat.
The guard touches one key per call, so it runs unchanged in Redis cluster mode (a
``redis+cluster://`` URL, `streaming_jobs.redis_target`): redis-py's cluster pipeline routes
each EVALSHA to its key's node, one pipeline per node.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from streaming_jobs import minute_aggregates as minutes
from streaming_jobs import online_layout as layout
from streaming_jobs.contract import (
    COLUMNS,
    QUARANTINE_COLUMNS,
    TIME_COLUMNS,
    quarantine_arrow_schema,
)
from streaming_jobs.heartbeat import heartbeat_payload, write_json_atomic
from streaming_jobs.job_config import JobConfig
from streaming_jobs.redis_target import is_cluster_url, redis_client
from streaming_jobs.session_fold import CLOSED, FEATURES, LIVE, MINUTES, QUARANTINE, to_json
from streaming_jobs.session_state import FEATURE_NAMES, OUTPUT_COLUMNS, SESSION_FEATURES

VIEW = "session_fv"
JOIN_KEY = "session_id"
# Closed sessions go to their own table: the batch `session_snapshots` asset replaces its
# `session_features` partitions whole on every backfill and must not delete what the stream wrote.
CLOSED_SESSIONS_TABLE = "session_features_stream"

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

# Add a batch's counts to one minute's hash once: the hash remembers the latest batch id of each
# checkpoint that added to it (ARGV[1]: its field, ARGV[2]: the batch id), and a replayed batch
# adds nothing. ARGV[3] is the TTL, then field/increment pairs. Keeps the latest minute too.
GUARDED_HINCR = """
local done = redis.call('HGET', KEYS[1], ARGV[1])
if done and tonumber(done) >= tonumber(ARGV[2]) then return 0 end
for i = 4, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
# The latest minute counted (`minute_aggregates.batch_clock`): only ever moves forward.
MAX_SET = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
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
    minutes_written: int = 0  # minute aggregate hashes this batch added to


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
        self._state_field = layout.state_field(VIEW)
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
            self._client = redis_client(self.cfg.redis_url)
            self._script = self._client.register_script(GUARDED_HSET)
        return self._client

    def _guarded_hset(self, pipe, key: bytes, args: list, cluster: bool) -> None:
        if cluster:
            # redis-py's cluster pipeline refuses `evalsha` by name (it cannot know the script
            # is loaded on every node); the script was loaded on every primary for this batch.
            pipe.execute_command("EVALSHA", self._script.sha, 1, key, *args)
        else:
            self._script(keys=[key], args=args, client=pipe)

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
        counts: dict = {}
        for payloads in frame["payloads"].tolist() if len(frame) else []:
            for kind, key, data in json.loads(payloads):
                if kind == LIVE:
                    stats.live_sessions[key] = data
                elif kind == MINUTES:
                    minutes.merge(counts, data)
                else:
                    by_kind[kind].append(data)
        stats.output_rows = sum(len(v) for v in by_kind.values())
        features, closed, quarantined = by_kind[FEATURES], by_kind[CLOSED], by_kind[QUARANTINE]

        received: list[int] = []
        if features:
            rows, states = [], []
            for data in features:
                rows.append(data["row"])
                states.append(data.get("state"))
                received.extend(data["received"])
            written = self._write_redis(rows, states)
            stats.sessions_written = written
            stats.sessions_skipped = len(rows) - written
        if counts:
            stats.minutes_written = self._write_minutes(counts, batch_id)
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

    def _write_redis(self, rows: list[list], states: Optional[list] = None) -> int:
        """Write session rows (and beside each, its state machine's state when given) through
        the version guard; returns how many were newer than what Redis held."""
        client = self._redis()
        cluster = is_cluster_url(self.cfg.redis_url)
        if cluster:
            # once per batch, so a node restarted or failed over since the last batch has it too
            self._script.sha = client.script_load(GUARDED_HSET)
        project = self.cfg.project
        ttl = str(self.cfg.redis_ttl_seconds)
        encode = layout.encode_value
        written = 0
        for start in range(0, len(rows), 2000):
            pipe = client.pipeline(transaction=False)
            for i, row in enumerate(rows[start:start + 2000], start):
                last_t = row[_COL["last_event_time"]]
                args: list[Any] = [self._v_field, f"{last_t}:{row[_COL['version']]}", ttl,
                                   self._ts_field, layout.encode_timestamp(last_t)]
                state = states[i] if states is not None else None
                if state is not None:
                    args.append(self._state_field)
                    args.append(to_json(state))
                for fld, kind, pos in zip(self._fields, self._kinds, self._positions):
                    args.append(fld)
                    args.append(encode(kind, row[pos]))
                self._guarded_hset(pipe, layout.entity_key(JOIN_KEY, row[_COL["session_id"]],
                                                           project), args, cluster)
            written += sum(int(r) for r in pipe.execute())
        return written

    def _write_minutes(self, counts: dict, batch_id: int) -> int:
        """Add the batch's per-minute aggregates to their minutes' hashes, once per batch."""
        client = self._redis()
        adder = client.register_script(GUARDED_HINCR)
        latest = client.register_script(MAX_SET)
        cluster = is_cluster_url(self.cfg.redis_url)
        if cluster:
            adder.sha = client.script_load(GUARDED_HINCR)
            latest.sha = client.script_load(MAX_SET)
        marker = f"~batch:{zlib.crc32(self.cfg.checkpoint.encode()):08x}"
        project = self.cfg.project
        pipe = client.pipeline(transaction=False)
        for minute, row in sorted(counts.items()):
            args: list[Any] = [marker, batch_id, minutes.TTL_SECONDS]
            for name, value in row.items():
                args.append(name)
                args.append(repr(float(value)))
            key = minutes.minute_key(project, minute)
            if cluster:
                pipe.execute_command("EVALSHA", adder.sha, 1, key, *args)
            else:
                adder(keys=[key], args=args, client=pipe)
        written = sum(int(r) for r in pipe.execute())
        key, newest = minutes.latest_key(project), minutes.batch_clock(counts)
        if cluster:
            client.execute_command("EVALSHA", latest.sha, 1, key, newest)
        else:
            latest(keys=[key], args=[newest])
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
    if name in TIME_COLUMNS and isinstance(value, int):
        return pd.Timestamp(value, unit="us", tz="UTC").isoformat()
    return str(value)


def closed_session_schema():
    """The offline session_features table: session_id, event_timestamp, then every feature."""
    import pyarrow as pa

    types = {"string": pa.string(), "int": pa.int64(), "float": pa.float64()}
    return pa.schema([("session_id", pa.string()), ("event_timestamp", pa.timestamp("us", "UTC"))]
                     + [(name, types[kind]) for name, kind, _ in SESSION_FEATURES])

