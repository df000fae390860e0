"""Planted incidents: what goes wrong on a real shop, written into a simulated day with its truth.

Off by default: a `SimulatorConfig` without `incidents` simulates exactly what it did before.
Each `Incident` names its day, its start (minute of the day, UTC), how long it lasts and the
segment it hits (a dimension and a value); `incident_truth` lists them for a judge
(`benchmarks/anomalies.py`). The kinds:

- ``bot_wave``: scrapers from one segment, long runs of fast product views (8 new a minute,
  some 25 at once, times `intensity`).
- ``card_testing``: short scripted sessions that buy one cheap item each, from one segment
  (4 a minute, times `intensity`).
- ``tracking_outage``: every event of one segment (a device, a country) stops arriving.
- ``broken_checkout``: purchases in the segment fail: shoppers retry checkout 1-3 times and leave.
- ``source_spike``: extra sessions from one traffic source, copies of the window's real
  sessions (half as many again, times `intensity`).
- ``price_feed_error``: the prices of one top-level category are off by a factor (`intensity`;
  the default 1.0 means a tenth).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

KINDS = ("bot_wave", "card_testing", "tracking_outage", "broken_checkout", "source_spike",
         "price_feed_error")
DIMENSIONS = ("all", "device", "country", "traffic_source", "category")


@dataclass(frozen=True)
class Incident:
    """One planted incident; `intensity` scales it (its meaning per kind: see `plant`)."""

    kind: str
    day: dt.date
    start_minute: int            # minutes after midnight UTC
    minutes: int = 60
    dimension: str = "country"
    value: str = "IN"
    intensity: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown incident kind {self.kind!r}; expected one of {KINDS}")
        if self.dimension not in DIMENSIONS:
            raise ValueError(f"unknown incident dimension {self.dimension!r}; expected one of "
                             f"{DIMENSIONS}")
        if not 0 <= self.start_minute < 1440 or self.minutes < 1:
            raise ValueError("an incident starts within its day and lasts at least a minute")

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.day, tz="UTC") + pd.Timedelta(minutes=self.start_minute)

    @property
    def end(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(minutes=self.minutes)


def incident_truth(incidents) -> pd.DataFrame:
    """The planted incidents as a table: kind, start, end, dimension, value, intensity."""
    return pd.DataFrame([{"kind": i.kind, "start": i.start, "end": i.end,
                          "dimension": i.dimension, "value": i.value, "intensity": i.intensity}
                         for i in incidents],
                        columns=["kind", "start", "end", "dimension", "value", "intensity"])


def _in_segment(events: pd.DataFrame, incident: Incident) -> np.ndarray:
    if incident.dimension == "all":
        return np.ones(len(events), bool)
    if incident.dimension == "category":
        top = events["category_code"].astype("string").str.split(".").str[0]
        return (top == incident.value).fillna(False).to_numpy(bool)
    return (events[incident.dimension] == incident.value).to_numpy(bool)


def _in_window(events: pd.DataFrame, incident: Incident) -> np.ndarray:
    t = events["event_time"]
    return ((t >= incident.start) & (t < incident.end)).to_numpy(bool)


def _segment_fields(incident: Incident, n: int, rng) -> dict:
    """device / country / traffic_source of new sessions: the incident's segment where it names
    one, else a plausible value."""
    fields = {"device": np.full(n, "desktop", object), "country": rng.choice(
        ["US", "GB", "DE", "FR", "PL", "BR", "IN"], n), "traffic_source": np.full(n, "direct", object)}
    if incident.dimension in fields:
        fields[incident.dimension] = np.full(n, incident.value, object)
    return fields


def _new_sessions(incident: Incident, rng, n_sessions: int, steps: list[list[str]],
                  gaps: tuple[float, float], products: pd.DataFrame, tag: str,
                  product_pick=None) -> pd.DataFrame:
    """Sessions that start uniformly in the incident's window, one row per event."""
    start_s = rng.uniform(0, incident.minutes * 60.0, n_sessions)
    fields = _segment_fields(incident, n_sessions, rng)
    rows = []
    for s in range(n_sessions):
        t = incident.start + pd.Timedelta(seconds=float(start_s[s]))
        pi = product_pick(rng) if product_pick else int(rng.integers(0, len(products)))
        for k, etype in enumerate(steps[s]):
            if k:
                t = t + pd.Timedelta(seconds=float(rng.uniform(*gaps)))
                if etype == "view":
                    pi = product_pick(rng) if product_pick else int(rng.integers(0, len(products)))
            rows.append((f"e-{tag}-{s:05d}-{k:03d}", t, etype, f"{tag}-{s:05d}", pi,
                         fields["device"][s], fields["country"][s], fields["traffic_source"][s]))
    frame = pd.DataFrame(rows, columns=["event_id", "event_time", "event_type", "session_id",
                                        "p", "device", "country", "traffic_source"])
    has_p = frame["event_type"].isin(["view", "cart", "purchase"]).to_numpy()
    p = frame["p"].to_numpy()
    for col in ("product_id", "category_id", "category_code", "brand", "price"):
        values = products[col].to_numpy()[p]
        frame[col] = np.where(has_p, values, np.nan if col == "price" else None)
    frame["user_id"] = frame["session_id"].str.replace("-", "-u", n=1)
    buy = frame["event_type"] == "purchase"
    frame["order_id"] = np.where(buy, "o" + frame["session_id"], None)
    frame["revenue"] = np.where(buy, frame["price"], np.nan)
    frame["discount"] = np.where(buy, 0.0, np.nan)
    frame["page_type"] = np.where(frame["event_type"] == "page_view", "cart", None)
    return frame.drop(columns="p")


def plant(events: pd.DataFrame, incident: Incident, rng, products: pd.DataFrame,
          number: int) -> pd.DataFrame:
    """The day's events (contract columns, before arrival noise) with one incident written in."""
    tag = f"inc{incident.day:%Y%m%d}{number}"
    window, segment = _in_window(events, incident), _in_segment(events, incident)
    if incident.kind == "tracking_outage":
        return events[~(window & segment)].reset_index(drop=True)
    if incident.kind == "price_feed_error":
        hit = window & segment
        factor = 0.1 if incident.intensity == 1.0 else incident.intensity
        events = events.copy()
        events.loc[hit, "price"] = np.round(events.loc[hit, "price"] * factor, 2)
        events.loc[hit, "revenue"] = np.round(events.loc[hit, "revenue"] * factor, 2)
        return events
    if incident.kind == "broken_checkout":
        # the payment step fails: each failed purchase becomes one to three more checkouts
        hit = window & segment & (events["event_type"] == "purchase").to_numpy()
        failed = events[hit].drop_duplicates("session_id")
        retries = []
        for k, row in enumerate(failed.itertuples(index=False)):
            t = row.event_time
            for j in range(int(rng.integers(1, 4))):
                t = t + pd.Timedelta(seconds=float(rng.uniform(5, 20)))
                retries.append({**row._asdict(), "event_id": f"{row.event_id}-retry{j}",
                                "event_time": t, "event_type": "checkout", "product_id": None,
                                "category_id": None, "category_code": None, "brand": None,
                                "price": np.nan, "order_id": None, "revenue": np.nan,
                                "discount": np.nan, "page_type": None})
        kept = events[~hit]
        return pd.concat([kept, pd.DataFrame(retries, columns=events.columns)], ignore_index=True)
    if incident.kind == "bot_wave":
        # 8 new scrapers a minute, some 25 at once (a scraper runs 1-6 minutes)
        n = int(round(8 * incident.intensity * incident.minutes))
        steps = [["view"] * int(rng.integers(40, 240)) for _ in range(max(n, 1))]
        bots = _new_sessions(incident, rng, max(n, 1), steps, (0.4, 2.5), products, tag)
        bots = bots[bots["event_time"] < incident.end]
        return pd.concat([events, bots[events.columns]], ignore_index=True)
    if incident.kind == "card_testing":
        n = int(round(4 * incident.intensity * incident.minutes))
        cheap = np.flatnonzero(products["price"].to_numpy() < 15.0)
        steps = [["page_view", "view", "cart", "checkout", "purchase"] for _ in range(n)]
        tests = _new_sessions(incident, rng, n, steps, (2.0, 6.0), products, tag,
                              product_pick=lambda r: int(r.choice(cheap)))
        return pd.concat([events, tests[events.columns]], ignore_index=True)
    # source_spike: copies of the day's sessions that start in the window, from one source
    firsts = events.sort_values("event_time").drop_duplicates("session_id")
    starting = firsts[_in_window(firsts, incident)]
    starting = starting[~starting["user_id"].astype(str).str.startswith("anon-bot")]
    n = int(round(len(starting) * 0.5 * incident.intensity))
    chosen = starting.sample(n=n, replace=True, random_state=rng.integers(2**31))
    copies = []
    for k, (sid, first_t) in enumerate(zip(chosen["session_id"], chosen["event_time"])):
        part = events[events["session_id"] == sid]
        shift = pd.Timedelta(seconds=float(rng.uniform(-30, 30)))
        new = f"{tag}-{k:05d}"
        copies.append(part.assign(
            session_id=new, event_id=part["event_id"] + f"-{tag}-{k}",
            event_time=part["event_time"] + shift, traffic_source=incident.value,
            order_id=np.where(part["order_id"].notna(), "o" + new, None)))
    return pd.concat([events, *copies], ignore_index=True) if copies else events


def plant_day(config, day: dt.date, events: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """`plant` every incident of `config.incidents` that falls on `day` (none: `events` as is)."""
    todays = [i for i in config.incidents if i.day == day]
    if not todays:
        return events
    rng = np.random.default_rng([config.seed, 3, day.toordinal()])
    for number, incident in enumerate(todays):
        events = plant(events, incident, rng, products, number)
    return events.reset_index(drop=True)
