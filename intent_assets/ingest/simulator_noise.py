"""What the simulator adds around real shoppers: scraper bots, and how events reach us.

Most events arrive within seconds; some arrive late, some twice, a few garbled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from intent_assets.ingest.simulator_world import string_ids
from streaming_jobs.contract import COLUMNS


def bot_events(config, rng, day, offset, n_bots, products):
    """Scrapers: long runs of fast product views, no cart, never a purchase."""
    tag = day.strftime("%Y%m%d")
    midnight = pd.Timestamp(day, tz="UTC")
    lengths = rng.integers(40, 240, n_bots)
    sess = np.repeat(np.arange(n_bots), lengths)
    step = np.concatenate([np.arange(k) for k in lengths]) if n_bots else np.array([], int)
    start = rng.random(n_bots) * 86_000.0
    gaps = rng.uniform(0.4, 2.5, len(sess))
    t = start[sess] + pd.Series(gaps).groupby(sess).cumsum().to_numpy() - gaps[0] * 0
    pi = rng.integers(0, len(products), len(sess))
    sid = string_ids(f"{tag}-", offset + 900_000 + sess)
    frame = pd.DataFrame({
        "event_id": string_ids(f"e{tag}-b", sess) + "-" + string_ids("", step, 3),
        "event_time": midnight + pd.to_timedelta(np.round(t, 3), unit="s"),
        "event_type": "view",
        "user_id": string_ids("anon-bot", sess % 97, 2),
        "session_id": sid,
        "product_id": products["product_id"].to_numpy()[pi],
        "category_id": products["category_id"].to_numpy()[pi],
        "category_code": products["category_code"].to_numpy()[pi],
        "brand": products["brand"].to_numpy()[pi],
        "price": products["price"].to_numpy()[pi],
        "device": "desktop", "country": "US", "traffic_source": "direct",
        "order_id": None, "revenue": np.nan, "discount": np.nan, "page_type": None,
    })
    sessions = pd.DataFrame({"session_id": np.unique(sid), "user_id": None, "prior": 0.0,
                             "hidden_intent": 0.0, "outcome": 0, "is_bot": True})
    return frame, sessions


def arrival_noise(config, rng, events: pd.DataFrame) -> pd.DataFrame:
    """When events reach us: mostly within seconds, some late, some twice, a few garbled."""
    n = len(events)
    delay = rng.uniform(0.05, 2.0, n)
    late = rng.random(n) < config.late_share
    delay[late] = rng.uniform(60.0, 900.0, late.sum())
    events = events.assign(received_time=events["event_time"] + pd.to_timedelta(delay, unit="s"))

    dup = events[rng.random(n) < config.duplicate_share]
    dup = dup.assign(received_time=dup["received_time"]
                     + pd.to_timedelta(rng.uniform(1.0, 600.0, len(dup)), unit="s"))

    # Garbled copies under fresh ids: they must land in quarantine, never in the clean stream.
    bad = events[rng.random(n) < config.malformed_share].copy()
    if len(bad):
        kind = rng.integers(0, 4, len(bad))
        bad["event_id"] = bad["event_id"] + "-x"
        bad["event_type"] = np.where(kind == 0, "VIEWED", bad["event_type"])
        bad["session_id"] = np.where(kind == 1, None, bad["session_id"])
        bad["price"] = np.where(kind == 2, -1.0, bad["price"])
        bad["event_time"] = np.where(kind == 3, pd.NaT, bad["event_time"])
        bad["event_time"] = pd.to_datetime(bad["event_time"], utc=True)
    out = pd.concat([events, dup, bad], ignore_index=True)
    out = out.sort_values("received_time", kind="stable").reset_index(drop=True)
    out["extra"] = None
    return out[list(COLUMNS)]
