"""Parse and pack: raw JSON lines judged by the event contract, packed by state bucket.

The job's `mapInPandas` step (`prepare_lines`). It never raises: a malformed or refused line
keeps its reason for the quarantine. A chunk's rows are packed into one JSON column, one row per
state bucket, so Spark carries, shuffles and converts a few rows per chunk, not one per event.
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Iterator, Optional

import numpy as np
import pandas as pd

from streaming_jobs.contract import (
    COLUMNS,
    TIME_COLUMNS,
    Validated,
    empty_events,
    empty_quarantine,
    validate_events,
)
from streaming_jobs.session_fold import REC, to_json

# One packed column: the stateful step converts each column to pandas per bucket, and one JSON
# column costs less, JVM and Python together, than the contract's columns typed.
PREPARED_SCHEMA = "bucket int, event_time timestamp, recs string"
_SID, _T = REC["session_id"], REC["event_time"]
REASON_MALFORMED = "malformed JSON"
REASON_FUTURE = "event_time in the future"
# How `state_bucket` hashes a session id. Checkpoints written before it was recorded hashed with
# Spark's xxhash64 and cannot be resumed: their sessions would be looked for in other buckets.
BUCKET_HASH = "crc32-utf8"


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
        cols.append(_micros(col) if name in TIME_COLUMNS else _plain(col))
    return list(zip(*cols))


def _validate(frame: pd.DataFrame):
    """The contract's verdict on a chunk; should a row make the contract itself fail, the chunk
    is judged row by row and only the rows that fail are refused ("unreadable event")."""
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
    return Validated(pd.concat(events or [empty_events()], ignore_index=True),
                     pd.concat(refused or [empty_quarantine()], ignore_index=True))


def _parse(lines: list) -> list[Optional[dict]]:
    """Each line as `json.loads` reads it when that is a JSON object, else None.

    The decoder's scanner is called directly (json.loads' own frames cost as much as scanning
    a line); a line it does not read whole, as one value from its first character, goes through
    json.loads, so the verdict is json.loads' own.
    """
    # made per call, not at import: the scanner object does not pickle, and Spark ships the
    # job's functions pickled
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

