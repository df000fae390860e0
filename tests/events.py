"""Hand-written clickstream events for tests: a small builder over the contract columns."""

from __future__ import annotations

import pandas as pd

from streaming_jobs.contract import COLUMNS

T0 = pd.Timestamp("2026-10-01 10:00:00", tz="UTC")


def event(session_id: str, user_id: str, seconds: float, event_type: str = "view", *,
          product_id: str | None = "p1", price: float | None = 10.0, day0=T0, **fields) -> dict:
    t = day0 + pd.Timedelta(seconds=seconds)
    row = {c: None for c in COLUMNS}
    row.update(event_id=f"{session_id}-{seconds}-{event_type}", event_time=t, received_time=t,
               event_type=event_type, user_id=user_id, session_id=session_id,
               product_id=product_id if event_type in ("view", "cart", "remove_from_cart", "purchase") else None,
               category_id="c1", category_code="apparel.shoes", brand="b1",
               price=price if event_type in ("view", "cart", "remove_from_cart", "purchase") else None,
               device="mobile", country="DE", traffic_source="organic")
    row.update(fields)
    return row


def frame(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in ("event_time", "received_time"):
        out[col] = pd.to_datetime(out[col], utc=True)
    return out
