"""Whole-row encode and decode over the online layout: the reference the parity tests compare
Feast's writes and the stream's with (the product writes and reads field by field)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from streaming_jobs.online_layout import (decode_timestamp, decode_value, encode_timestamp,
                                          encode_value, field, ts_field)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def micros_of(value: dt.datetime) -> int:
    """Microseconds since the epoch of a datetime (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return (value - _EPOCH) // dt.timedelta(microseconds=1)


def encode_row(view: str, kinds: dict[str, str], values: dict[str, Any],
               event_micros: int) -> dict[bytes, bytes]:
    """The hash fields and values of one feature view row, as Feast would write them."""
    mapping = {ts_field(view): encode_timestamp(event_micros)}
    for name, kind in kinds.items():
        mapping[field(view, name)] = encode_value(kind, values.get(name))
    return mapping


def decode_row(view: str, features: list[str], raw: list[bytes | None]) -> dict[str, Any]:
    """Feature values from an HMGET of `features` plus the `_ts:` field (in that order)."""
    out = {name: decode_value(value) for name, value in zip(features, raw)}
    micros = decode_timestamp(raw[len(features)]) if len(raw) > len(features) else None
    out["event_timestamp"] = micros
    return out
