"""An event's fields from the outside world as the session state machine takes them.

Missing values of any flavour become None, ids become strings, times become integer
microseconds since the epoch (UTC). The stream, `replay` and the scoring API's request-time
fold (`streaming_jobs.moment`) all read events through these, so a field cannot be cleaned one
way online and another offline.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ONE_US = dt.timedelta(microseconds=1)
_US_PER_SECOND = 1_000_000
_SECONDS_PER_DAY = 86_400
_NA, _NAT = pd.NA, pd.NaT


def clean(value):
    """None for any flavour of missing (None, NaN, pd.NA, NaT); strings stay strings."""
    if value is None or value.__class__ is str:  # most fields: decided without pandas
        return value
    if value is _NA or value is _NAT:
        return None
    if isinstance(value, float) and value != value:
        return None
    return value


def clean_id(value):
    if value is None or value.__class__ is str:
        return value
    value = clean(value)
    if value is None or type(value) is str:
        return value
    # ids are strings in the contract; a number from a JSON parser would break to_dict's keys
    return str(value)


def micros(value) -> int:
    """Microseconds since the epoch of a UTC instant (Timestamp, datetime, ISO string)."""
    if value.__class__ is dt.datetime and value.tzinfo is not None:  # an API request's event
        # the timedelta's exact parts: dividing it by one microsecond builds two more objects
        delta = value - EPOCH
        return (delta.days * _SECONDS_PER_DAY + delta.seconds) * _US_PER_SECOND \
            + delta.microseconds
    if isinstance(value, pd.Timestamp):
        if value.tzinfo is None:
            value = value.tz_localize("UTC")
        return value.value // 1000
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return (value - EPOCH) // _ONE_US
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[us]").astype(np.int64))
    if isinstance(value, str):
        return micros(pd.Timestamp(value))
    raise TypeError(f"event_time must be a timestamp, got {type(value).__name__}")
