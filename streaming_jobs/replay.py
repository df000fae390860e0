"""Replaying stored events into the job's sources: JSON-lines files in a landing directory, Kinesis.

Used by `intent stream replay`, the tests and the benchmark. Events go out in the order given
(the simulator's arrival order) at a chosen rate. With `stamp_received`, each event's
`received_time` becomes the moment it was written, so the job's event-to-Redis latency is
measured from the real arrival.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pandas as pd

from streaming_jobs.contract import COLUMNS


def json_lines(events: pd.DataFrame, received: Optional[pd.Timestamp] = None) -> list[str]:
    """Events as JSON objects, one per line: ISO-8601 UTC times, missing fields left out."""
    frame = events[[c for c in COLUMNS if c in events.columns]].copy()
    if received is not None:
        frame["received_time"] = received
    for col in ("event_time", "received_time"):
        if col in frame:
            times = pd.to_datetime(frame[col], utc=True)
            frame[col] = times.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").where(times.notna(), None)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [json.dumps({k: v for k, v in r.items() if v is not None}) for r in records]


@dataclass(frozen=True)
class Written:
    """One chunk sent: where it went, how many events, and when."""

    target: str
    events: int
    written_at: float


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _paced(n: int, batch_size: int, rate: Optional[float]) -> Iterator[tuple[int, int]]:
    """Chunk bounds, sleeping so that chunk k starts no earlier than k * batch_size / rate."""
    t0 = time.monotonic()
    for start, end in _chunks(n, batch_size):
        if rate:
            delay = t0 + start / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield start, end


def write_landing(events: pd.DataFrame, directory: str | Path, batch_size: int = 1000,
                  rate: Optional[float] = None, stamp_received: bool = False,
                  prefix: str = "events", on_chunk: Optional[Callable[[Written], None]] = None
                  ) -> list[Written]:
    """Write events as JSON-lines files of `batch_size` events into `directory`, at `rate` events/s.

    Each file appears atomically (written under a hidden name, then renamed), so the job's file
    source never reads half a file. Names sort in write order.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    stamp = time.time_ns()
    for k, (start, end) in enumerate(_paced(len(events), batch_size, rate)):
        received = pd.Timestamp.now(tz="UTC") if stamp_received else None
        lines = json_lines(events.iloc[start:end], received)
        name = f"{prefix}-{stamp}-{k:07d}.jsonl"
        tmp = directory / f".{name}.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, directory / name)
        written = Written(str(directory / name), end - start, time.time())
        out.append(written)
        if on_chunk:
            on_chunk(written)
    return out


def kinesis_client(region: str = "us-east-1", endpoint_url: Optional[str] = None):
    import boto3

    return boto3.client("kinesis", region_name=region, endpoint_url=endpoint_url)


def put_kinesis(events: pd.DataFrame, stream: str, client, batch_size: int = 500,
                rate: Optional[float] = None, stamp_received: bool = False) -> list[Written]:
    """Put events on a Kinesis stream (partition key: session_id), at `rate` events/s.

    PutRecords is not atomic: failed entries are retried until accepted, so every event lands
    (at least once; the job drops the duplicates a retry could make).
    """
    out = []
    for start, end in _paced(len(events), min(batch_size, 500), rate):
        received = pd.Timestamp.now(tz="UTC") if stamp_received else None
        chunk = events.iloc[start:end]
        keys = chunk["session_id"].astype(object).where(chunk["session_id"].notna(), "none")
        entries = [{"Data": line.encode("utf-8"), "PartitionKey": str(key)[:256]}
                   for line, key in zip(json_lines(chunk, received), keys)]
        while entries:
            reply = client.put_records(StreamName=stream, Records=entries)
            if not reply.get("FailedRecordCount"):
                break
            failed = np.array(["ErrorCode" in r for r in reply["Records"]])
            entries = [e for e, bad in zip(entries, failed) if bad]
            time.sleep(0.1)
        out.append(Written(stream, end - start, time.time()))
    return out
