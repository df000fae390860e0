"""Per-minute aggregates by segment: the near-real-time anomaly detector's input, one definition.

The streaming job counts every event it accepts (after dedupe and the watermark) into the
minute of its event_time, overall and per device, country, traffic source and top-level
category; `minute_aggregates` counts a stored clickstream the same way (the benchmark, the
tests). Counts add up across micro-batches, so the sink adds each batch's into one Redis hash
per minute (`minute_key`), guarded by batch id so a replayed batch adds nothing twice.

Per event, its session's context is the latest event_time of that session seen before it in
arrival order (None: the session's first event, a session start):
- ``events``, ``views``, ``carts``, ``checkouts``, ``purchases``: events by type;
- ``sessions``: session starts;
- ``active``: sessions with an event in the minute (an event whose session's previous one is
  in an earlier minute, or none): what stops when tracking breaks, barely clumped;
- ``orders``: purchases that are not ``fast`` (an order's lines come a second apart, so this
  counts an order once, whatever its number of items);
- ``fast``: events less than `FAST_GAP_US` after the session's previous one (scripted clicking:
  bots and card testers; a human gap is seconds to minutes);
- per top-level category, ``priced``, ``log_price`` and ``log_price_sq``: count, sum and sum of
  squares of log(price) of events with a positive price.

A field of a minute's hash is ``<dimension>=<value>|<metric>``; the overall segment is
``all=all``. A session whose state the stream closed (timeout) and that comes back starts anew.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import pandas as pd

COUNT_DIMENSIONS = ("device", "country", "traffic_source")
PRICE_DIMENSION = "category"
COUNT_METRICS = ("events", "sessions", "active", "fast", "views", "carts", "checkouts",
                 "purchases", "orders")
PRICE_METRICS = ("priced", "log_price", "log_price_sq")
FAST_GAP_US = 2_000_000
US_PER_MINUTE = 60_000_000
_TYPE_METRIC = {"view": "views", "cart": "carts", "checkout": "checkouts", "purchase": "purchases"}
# The job's `--project` default: the key prefix the sensor reads.
DEFAULT_PROJECT = "intent"
# A minute's hash lives this long: the detector's baseline reads the last hours.
TTL_SECONDS = 3 * 86_400


_FIELDS: dict = {}


def field(dimension: str, value, metric: str) -> str:
    name = _FIELDS.get((dimension, value, metric))
    if name is None:
        name = f"{dimension}={'unknown' if value is None else value}|{metric}"
        if len(_FIELDS) < 100_000:  # names are few (segments x metrics); a flood is not cached
            _FIELDS[(dimension, value, metric)] = name
    return name


def parse_field(name: str) -> tuple[str, str, str]:
    segment, _, metric = name.rpartition("|")
    dimension, _, value = segment.partition("=")
    return dimension, value, metric


def minute_key(project: str, minute: int) -> str:
    """The Redis hash of one minute (minutes since the epoch, UTC)."""
    return f"{project}:minute_aggregates:{minute}"


def latest_key(project: str) -> str:
    """The Redis string holding the latest minute the stream has counted events into."""
    return f"{project}:minute_aggregates:latest"


def top_category(code) -> Optional[str]:
    if code is None or (isinstance(code, float) and math.isnan(code)) or code == "":
        return None
    return str(code).split(".", 1)[0]


_SEGMENT_FIELDS: dict = {}
_PRICE_FIELDS: dict = {}


def _segment_fields(device, country, source) -> dict:
    """metric -> the field names an event of these segments counts into (cached: few)."""
    names = _SEGMENT_FIELDS.get((device, country, source))
    if names is None:
        names = {metric: tuple(field(d, v, metric) for d, v in (
            ("all", "all"), ("device", device), ("country", country), ("traffic_source", source)))
            for metric in COUNT_METRICS}
        if len(_SEGMENT_FIELDS) < 10_000:
            _SEGMENT_FIELDS[(device, country, source)] = names
    return names


def _price_fields(category_code) -> tuple:
    names = _PRICE_FIELDS.get(category_code)
    if names is None:
        category = top_category(category_code)
        names = tuple((field("all", "all", m), field(PRICE_DIMENSION, category, m))
                      for m in PRICE_METRICS)
        if len(_PRICE_FIELDS) < 10_000:
            _PRICE_FIELDS[category_code] = names
    return names


def add_event(counts: dict, t_us: int, prev_t_us: Optional[int], event_type: str, device,
              country, source, category_code, price) -> None:
    """Count one accepted event into `counts` ({minute: {field: value}}), in place."""
    minute = t_us // US_PER_MINUTE
    row = counts.get(minute)
    if row is None:
        row = counts[minute] = {}
    names = _segment_fields(device, country, source)
    fast = prev_t_us is not None and 0 <= t_us - prev_t_us < FAST_GAP_US
    metrics = ["events", "sessions" if prev_t_us is None else "fast" if fast else None,
               _TYPE_METRIC.get(event_type)]
    if metrics[2] == "purchases" and not fast:
        metrics.append("orders")
    if prev_t_us is None or prev_t_us // US_PER_MINUTE < minute:
        metrics.append("active")
    for metric in metrics:
        if metric is not None:
            for name in names[metric]:
                row[name] = row.get(name, 0) + 1
    if price is not None and price == price and price > 0:
        log_price = math.log(price)
        for (all_name, cat_name), value in zip(_price_fields(category_code),
                                               (1, log_price, log_price * log_price)):
            row[all_name] = row.get(all_name, 0) + value
            row[cat_name] = row.get(cat_name, 0) + value


def batch_clock(counts: dict) -> int:
    """The latest minute of a batch's counts that is not an outlier: the minute below which 99 %
    of its events fall, so one event stamped far ahead cannot move the detector's clock."""
    totals = sorted((int(m), row.get(field("all", "all", "events"), 0)) for m, row in counts.items())
    allowed = 0.01 * sum(n for _, n in totals)
    above = 0
    for minute, n in reversed(totals):
        if above + n > allowed:
            return minute
        above += n
    return totals[-1][0]


def merge(into: dict, other: dict) -> dict:
    """Add `other`'s counts to `into` (minute keys as int or str), in place; returns `into`."""
    for minute, row in other.items():
        target = into.setdefault(int(minute), {})
        for name, value in row.items():
            target[name] = target.get(name, 0) + value
    return into


def count_records(records: Iterable, previous: Optional[int], counts: dict,
                  positions: dict) -> Optional[int]:
    """Count one session's accepted packed records (in arrival order) into `counts`;
    `previous` is its latest event_time before them (None: a new session). Returns the latest
    event_time after them."""
    t, typ, dev, ctry, src, cat, price = (positions[k] for k in (
        "event_time", "event_type", "device", "country", "traffic_source", "category_code",
        "price"))
    for rec in records:
        add_event(counts, rec[t], previous, rec[typ], rec[dev], rec[ctry], rec[src], rec[cat],
                  rec[price])
        previous = rec[t] if previous is None else max(previous, rec[t])
    return previous


def minute_aggregates(events: pd.DataFrame) -> dict:
    """A stored clickstream's per-minute aggregates, counted as the stream counts them.

    `events` are contract-valid and deduplicated, in arrival order (the simulator's and the
    landing files' order).
    """
    counts: dict = {}
    times = events["event_time"].astype("datetime64[us, UTC]")
    t_us = (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us")
    prev = t_us.groupby(events["session_id"].to_numpy()).cummax()
    prev = prev.groupby(events["session_id"].to_numpy()).shift(1)
    columns = [events[c].astype(object).where(events[c].notna(), None).tolist()
               for c in ("event_type", "device", "country", "traffic_source", "category_code",
                         "price")]
    for t, p, etype, dev, ctry, src, cat, price in zip(t_us.tolist(), prev.tolist(), *columns):
        add_event(counts, int(t), None if p is None or p != p else int(p), etype, dev, ctry,
                  src, cat, price)
    return counts


def read_clock(client, project: str) -> Optional[int]:
    """The latest minute the stream counted into (None: it has counted nothing yet)."""
    raw = client.get(latest_key(project))
    return None if raw is None else int(raw)


def read_counts(client, project: str, first: int, last: int) -> dict:
    """Minutes `first`..`last` of the stream's aggregates from Redis: one pipelined HGETALL per
    minute (routed per node in cluster mode); minutes without a hash are left out."""
    pipe = client.pipeline(transaction=False)
    for minute in range(first, last + 1):
        pipe.hgetall(minute_key(project, minute))
    out = {}
    for minute, raw in zip(range(first, last + 1), pipe.execute()):
        if raw:
            out[minute] = {(k.decode() if isinstance(k, bytes) else k): float(v)
                           for k, v in raw.items()
                           if not (k.decode() if isinstance(k, bytes) else k).startswith("~")}
    return out
