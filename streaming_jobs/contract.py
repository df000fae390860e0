"""The clickstream event contract (DESIGN.md, "Data contracts"), as one pure module.

Batch ingestion, the REES46 importer and the streaming job all validate events with
`validate_events`, so a row is judged the same way wherever it enters. A row that breaks the
contract is never dropped: it comes back in the quarantine frame with the reason, every original
value kept as text.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase", "search", "page_view", "checkout")
# Event types that are about one product and so must name it.
PRODUCT_EVENT_TYPES = ("view", "cart", "remove_from_cart")

# Canonical columns in order, with their pandas dtypes. `received_time` (when the event reached us)
# and `page_type` (home / listing / cart / account for page views) are optional fields the simulator
# and the live source fill; `extra` holds any other field of the incoming row as a JSON object, so
# unknown fields are kept without changing the table's schema.
STRING_COLUMNS = (
    "event_id", "event_type", "user_id", "session_id", "product_id", "category_id",
    "category_code", "brand", "device", "country", "traffic_source", "order_id", "page_type",
)
FLOAT_COLUMNS = ("price", "revenue", "discount")
TIME_COLUMNS = ("event_time", "received_time")
COLUMNS = (
    "event_id", "event_time", "event_type", "user_id", "session_id", "product_id", "category_id",
    "category_code", "brand", "price", "device", "country", "traffic_source", "order_id",
    "revenue", "discount", "received_time", "page_type", "extra",
)
REQUIRED = ("event_id", "event_time", "event_type", "user_id", "session_id")
# What each column means, as the catalog (the clickstream's column schema) shows it.
COLUMN_DESCRIPTIONS = {
    "event_id": "Unique id of the event; a repeated id is quarantined as a duplicate.",
    "event_time": "When the event happened (UTC).",
    "event_type": "One of " + ", ".join(EVENT_TYPES) + ".",
    "user_id": "The user (anonymous visitors have an id too).",
    "session_id": "The session the event belongs to.",
    "product_id": "The product, required for view, cart and remove_from_cart.",
    "category_id": "The product's category id.",
    "category_code": "The product's category path, e.g. electronics.smartphone.",
    "brand": "The product's brand.",
    "price": "Unit price of the product at the event.",
    "device": "Device of the visit.",
    "country": "Country of the visit.",
    "traffic_source": "Where the visit came from.",
    "order_id": "The order a purchase line belongs to.",
    "revenue": "Revenue of a purchase line, after discount.",
    "discount": "Discount of a purchase line, as a share of the price.",
    "received_time": "When the event reached us (UTC); event_time when unknown.",
    "page_type": "home / listing / cart / account, for page views.",
    "extra": "Any other field of the incoming row, as a JSON object.",
}
QUARANTINE_COLUMNS = (*COLUMNS, "quarantine_reason")

def arrow_schema():
    """The parquet schema of a contract table: the same types in every partition."""
    import pyarrow as pa

    types = {c: pa.string() for c in (*STRING_COLUMNS, "extra")}
    types.update({c: pa.float64() for c in FLOAT_COLUMNS})
    types.update({c: pa.timestamp("us", tz="UTC") for c in TIME_COLUMNS})
    return pa.schema([(c, types[c]) for c in COLUMNS])


def quarantine_arrow_schema():
    import pyarrow as pa

    return pa.schema([(c, pa.string()) for c in QUARANTINE_COLUMNS])


# Events dated before this are clock errors, not history.
EARLIEST_EVENT_TIME = pd.Timestamp("2000-01-01", tz="UTC")
# the same instant as a datetime: one event's check compares ~50x faster with it (the API's path)
_EARLIEST = EARLIEST_EVENT_TIME.to_pydatetime()
# in validate_events' order: the required text fields, then the time
_REQUIRED_ORDER = (*(c for c in REQUIRED if c != "event_time"), "event_time")


@dataclass(frozen=True)
class Validated:
    """Rows that meet the contract (typed, canonical columns) and the ones that do not."""

    events: pd.DataFrame
    quarantine: pd.DataFrame


def empty_events() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS}))


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="string") for c in QUARANTINE_COLUMNS})


# The fast paths below look at a column through Arrow, whose compute functions check a whole
# column at C speed where pandas' string methods make a Python call per value; a column they
# cannot vouch for takes the general path.
def _arrow_text(series: pd.Series):
    """`series` as an Arrow string array if it holds only text and missing values (not only
    missing ones); else None."""
    import pyarrow as pa

    if series.dtype != object:
        return None
    try:
        text = pa.array(series.to_numpy(), type=pa.string(), from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):
        return None
    return text if text.null_count < len(text) else None


def _trimmed(series: pd.Series) -> bool:
    """Whether every value of `series` is text that starts and ends with a letter or a digit:
    never blank, and str.strip() leaves it as it is (no letter or digit is whitespace)."""
    import pyarrow.compute as pc

    text = _arrow_text(series)
    if text is None:
        return False
    first = pc.utf8_is_alnum(pc.utf8_slice_codeunits(text, 0, 1))
    last = pc.utf8_is_alnum(pc.utf8_slice_codeunits(text, -1))
    return pc.all(pc.and_(first, last)).as_py() is True


def _text(series: pd.Series) -> pd.Series:
    """Strings with blanks as missing; numbers that came in as floats lose their '.0'."""
    if _trimmed(series):
        return series.astype("string")  # nothing to strip, nothing blank
    if pd.api.types.is_float_dtype(series):
        as_int = series.dropna()
        if (as_int == np.floor(as_int)).all():
            series = series.astype("Int64")
    out = series.astype("string").str.strip()
    return out.mask(out == "")


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for col in COLUMNS:
        raw = frame[col] if col in frame else pd.Series(pd.NA, index=frame.index, dtype=object)
        if col in STRING_COLUMNS or col == "extra":
            out[col] = _text(raw)
        elif col in FLOAT_COLUMNS:
            out[col] = pd.to_numeric(raw, errors="coerce").astype("float64")
        else:
            out[col] = _to_utc(raw)
    return out


# Times as the sources write them (2026-10-01T00:00:01.289000Z), in years that pandas'
# nanosecond timestamps hold: text that every parser below reads as the same UTC instant.
_CANONICAL_TIME = (r"^(19|20|21)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
                   r"T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?Z$")


def _canonical_utc(raw: pd.Series):
    """`raw` read by Arrow's ISO 8601 parser when every value is a canonical time or missing;
    None otherwise. The general path in `_to_utc` makes a Python call per value; this makes
    none. A date that does not exist (February 30th) makes Arrow raise, and the column takes
    the general path, where that value is unparseable."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = _arrow_text(raw)
    if text is None or not pc.all(pc.match_substring_regex(text, _CANONICAL_TIME)).as_py():
        return None
    try:
        parsed = text.cast(pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:
        return None  # a date that does not exist
    return pd.Series(parsed.to_pandas(), index=raw.index).astype("datetime64[us, UTC]")


def _to_utc(raw: pd.Series) -> pd.Series:
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    if pd.api.types.is_datetime64_dtype(raw):
        return raw.dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    canonical = _canonical_utc(raw)
    if canonical is not None:
        return canonical
    text = raw.astype("string").str.strip().str.replace(r"\s+UTC$", "", regex=True)
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    return parsed.astype("datetime64[us, UTC]")


def _extras(frame: pd.DataFrame) -> pd.Series:
    unknown = [c for c in frame.columns if c not in COLUMNS]
    if not unknown:
        return frame["extra"] if "extra" in frame else pd.Series(pd.NA, index=frame.index)
    records = frame[unknown].astype(object).where(frame[unknown].notna(), None)
    return pd.Series(
        [json.dumps({k: v for k, v in r.items() if v is not None}, default=str, sort_keys=True)
         for r in records.to_dict("records")],
        index=frame.index,
    )


def _present(frame: pd.DataFrame, col: str) -> pd.Series:
    """Whether each row has a non-blank value in `col`."""
    if col not in frame:
        return pd.Series(False, index=frame.index)
    values = frame[col]
    if pd.api.types.is_numeric_dtype(values):
        return values.notna()  # a number's text is never blank: no need to write it out
    return values.notna() & (values.astype("string").str.strip() != "")


def validate_events(frame: pd.DataFrame) -> Validated:
    """Split incoming rows into contract-abiding events and quarantined rows with a reason.

    A row's first broken rule is its reason. Duplicates are not judged here (see
    `split_duplicates`): a duplicate is a well-formed event that arrived twice.
    """
    frame = frame.reset_index(drop=True)
    frame = frame.assign(extra=_extras(frame))
    typed = _typed(frame)

    reason = np.full(len(frame), None, dtype=object)
    unflagged = np.ones(len(frame), dtype=bool)

    def flag(mask: pd.Series, why: str) -> None:
        hit = unflagged & mask.fillna(False).to_numpy(dtype=bool)
        reason[hit] = why
        unflagged[hit] = False

    for col in REQUIRED:
        if col == "event_time":
            continue
        flag(typed[col].isna(), f"missing {col}")
    raw_time = frame["event_time"] if "event_time" in frame else pd.Series(pd.NA, index=frame.index)
    flag(raw_time.isna() | (raw_time.astype("string").str.strip() == ""), "missing event_time")
    flag(typed["event_time"].isna(), "unparseable event_time")
    flag(typed["event_time"] < EARLIEST_EVENT_TIME, "event_time before 2000-01-01")
    flag(~typed["event_type"].isin(EVENT_TYPES), "unknown event_type")
    flag(typed["event_type"].isin(PRODUCT_EVENT_TYPES) & typed["product_id"].isna(),
         "missing product_id for a product event")
    for col in FLOAT_COLUMNS:
        flag(_present(frame, col) & typed[col].isna(), f"non-numeric {col}")
    flag(typed["price"] < 0, "negative price")
    flag(typed["revenue"] < 0, "negative revenue")
    flag((typed["discount"] < 0) | (typed["discount"] > 1), "discount outside [0, 1]")

    bad = ~unflagged
    typed["received_time"] = typed["received_time"].fillna(typed["event_time"])
    if not bad.any():  # the usual chunk: nothing to convert back to text
        return Validated(typed.reset_index(drop=True), empty_quarantine())
    quarantine = frame.loc[bad].copy()
    quarantine = pd.DataFrame(
        {c: _text(quarantine[c].astype("string")) if c in quarantine
         else pd.Series(pd.NA, index=quarantine.index, dtype="string")
         for c in COLUMNS}
    )
    quarantine["quarantine_reason"] = pd.array(reason[bad], dtype="string")
    return Validated(typed.loc[~bad].reset_index(drop=True), quarantine.reset_index(drop=True))


def event_refusal(event: Mapping) -> str | None:
    """The reason one event (already typed: a timezone-aware `event_time`, numbers as numbers)
    breaks the contract, or None: the first rule `validate_events` would flag, for one record.

    For the scoring API, which validates a request's triggering event without building a frame;
    a test holds it to the same verdicts as `validate_events`.
    """
    for col in _REQUIRED_ORDER:
        value = event.get(col)
        if value is None or (isinstance(value, str) and not value.strip()):
            return f"missing {col}"
    if event["event_time"] < _EARLIEST:
        return "event_time before 2000-01-01"
    etype = event["event_type"]
    if etype not in EVENT_TYPES:
        return "unknown event_type"
    product = event.get("product_id")
    if etype in PRODUCT_EVENT_TYPES and (product is None or not str(product).strip()):
        return "missing product_id for a product event"
    if (event.get("price") or 0.0) < 0:
        return "negative price"
    if (event.get("revenue") or 0.0) < 0:
        return "negative revenue"
    discount = event.get("discount")
    if discount is not None and not 0 <= discount <= 1:
        return "discount outside [0, 1]"
    return None


# `_EARLIEST` in microseconds since the epoch, as `session_state.event_args` gives a time
_EARLIEST_US = (_EARLIEST - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(
    microseconds=1)


def args_refusal(args: tuple) -> str | None:
    """`event_refusal` for one event as `session_state.event_args` gives it (session_id,
    event_id, time in us, event_type, user_id, product_id, category_id, price, ...): an event
    without revenue or discount, its ids text or None, its time present.

    For the scoring API, which builds those from the validated request body (ids and type already
    text, the time already in us) instead of a record; a test holds it to `event_refusal`'s
    verdicts.
    """
    session_id, event_id, t, etype, user_id, product_id, _, price = args[:8]
    if event_id is None or not event_id.strip():
        return "missing event_id"
    if etype is None or (etype.__class__ is str and not etype.strip()):
        return "missing event_type"
    if user_id is None or not user_id.strip():
        return "missing user_id"
    if session_id is None or not session_id.strip():
        return "missing session_id"
    if t < _EARLIEST_US:
        return "event_time before 2000-01-01"
    if etype not in EVENT_TYPES:
        return "unknown event_type"
    if etype in PRODUCT_EVENT_TYPES and (product_id is None or not product_id.strip()):
        return "missing product_id for a product event"
    if price is not None and price < 0:
        return "negative price"
    return None


def split_duplicates(events: pd.DataFrame) -> Validated:
    """Keep the first received copy of each event_id; later copies go to quarantine.

    Rule: an event is identified by `event_id` alone. Among copies, the one received first wins
    (ties broken by position), so re-delivered events never count twice.
    """
    order = events.sort_values(["received_time", "event_time"], kind="stable")
    dup = order.duplicated("event_id", keep="first")
    kept = order.loc[~dup].sort_index()
    dropped = order.loc[dup].sort_index()
    quarantine = dropped.astype({c: "string" for c in COLUMNS}).copy()
    quarantine["quarantine_reason"] = pd.Series("duplicate event_id", index=quarantine.index,
                                                dtype="string")
    return Validated(kept.reset_index(drop=True),
                     quarantine[list(QUARANTINE_COLUMNS)].reset_index(drop=True))
