"""The clickstream event contract (DESIGN.md, "Data contracts"), as one pure module.

Batch ingestion, the REES46 importer and the streaming job all validate events with
`validate_events`, so a row is judged the same way wherever it enters. A row that breaks the
contract is never dropped: it comes back in the quarantine frame with the reason, every original
value kept as text.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class Validated:
    """Rows that meet the contract (typed, canonical columns) and the ones that do not."""

    events: pd.DataFrame
    quarantine: pd.DataFrame


def empty_events() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS}))


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="string") for c in QUARANTINE_COLUMNS})


def _text(series: pd.Series) -> pd.Series:
    """Strings with blanks as missing; numbers that came in as floats lose their '.0'."""
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


def _to_utc(raw: pd.Series) -> pd.Series:
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    if pd.api.types.is_datetime64_dtype(raw):
        return raw.dt.tz_localize("UTC").astype("datetime64[us, UTC]")
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


def validate_events(frame: pd.DataFrame) -> Validated:
    """Split incoming rows into contract-abiding events and quarantined rows with a reason.

    A row's first broken rule is its reason. Duplicates are not judged here (see
    `split_duplicates`): a duplicate is a well-formed event that arrived twice.
    """
    frame = frame.reset_index(drop=True)
    frame = frame.assign(extra=_extras(frame))
    typed = _typed(frame)

    reason = pd.Series(pd.NA, index=frame.index, dtype="string")

    def flag(mask: pd.Series, why: str) -> None:
        reason.mask(reason.isna() & mask.fillna(False).astype(bool), why, inplace=True)

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
        present = frame[col].notna() & (frame[col].astype("string").str.strip() != "") \
            if col in frame else pd.Series(False, index=frame.index)
        flag(present & typed[col].isna(), f"non-numeric {col}")
    flag(typed["price"] < 0, "negative price")
    flag(typed["revenue"] < 0, "negative revenue")
    flag((typed["discount"] < 0) | (typed["discount"] > 1), "discount outside [0, 1]")

    bad = reason.notna()
    typed["received_time"] = typed["received_time"].fillna(typed["event_time"])
    quarantine = frame.loc[bad].copy()
    quarantine = pd.DataFrame(
        {c: _text(quarantine[c].astype("string")) if c in quarantine
         else pd.Series(pd.NA, index=quarantine.index, dtype="string")
         for c in COLUMNS}
    )
    quarantine["quarantine_reason"] = reason[bad]
    return Validated(typed.loc[~bad].reset_index(drop=True), quarantine.reset_index(drop=True))


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
