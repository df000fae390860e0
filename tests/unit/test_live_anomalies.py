"""Planted incidents, the per-minute aggregates and the minute detector (pure, seconds)."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from intent_assets.ingest.simulator import SimulatorConfig, simulate_day
from intent_assets.ingest.simulator_incidents import KINDS, Incident, incident_truth
from intent_assets.monitoring.live_anomalies import (
    Episodes,
    LiveRules,
    evaluate,
    judge_minute,
    needed_minutes,
)
from streaming_jobs.contract import split_duplicates, validate_events
from streaming_jobs.minute_aggregates import (
    batch_clock,
    field,
    merge,
    minute_aggregates,
)

DAY = dt.date(2026, 10, 7)
NOON = 12 * 60
SESSIONS = 10_000   # a noon minute holds ~80 events: enough to tell an outage in minutes
BASE = SimulatorConfig(seed=11, sessions_per_day=SESSIONS)


def with_incident(kind: str, dimension: str, value: str, day: dt.date = DAY,
                  sessions: int = SESSIONS, **kw):
    incident = Incident(kind, day, NOON, 30, dimension, value, **kw)
    return SimulatorConfig(seed=11, sessions_per_day=sessions, incidents=(incident,)), incident


def window_of(events: pd.DataFrame, incident: Incident) -> pd.DataFrame:
    """The incident window's events, less the simulator's garbled copies."""
    inside = (events["event_time"] >= incident.start) & (events["event_time"] < incident.end)
    return events[inside & ~events["event_id"].str.endswith("-x")]


# -- planted incidents ------------------------------------------------------------------------------
def test_no_incident_on_a_day_leaves_its_data_identical():
    quiet = simulate_day(BASE, DAY)
    config, _ = with_incident("bot_wave", "country", "IN", day=DAY + dt.timedelta(days=1))
    other = simulate_day(config, DAY)
    pd.testing.assert_frame_equal(quiet.events, other.events)
    pd.testing.assert_frame_equal(quiet.orders, other.orders)
    assert BASE.incidents == ()


def test_each_incident_kind_changes_its_segment_in_its_window_only():
    quiet = simulate_day(BASE, DAY).events
    before = window_of(quiet, Incident("bot_wave", DAY, NOON, 30))

    config, inc = with_incident("tracking_outage", "device", "tablet")
    events = simulate_day(config, DAY).events
    inside = window_of(events, inc)
    assert (before["device"] == "tablet").sum() > 20 and (inside["device"] == "tablet").sum() == 0
    # outside the window the same events happen (how they arrive is drawn anew: late, twice)
    ids = lambda f: set(f.loc[f["event_time"] < inc.start, "event_id"]) - {  # noqa: E731
        i for i in f["event_id"] if i.endswith("-x")}
    assert ids(events) == ids(quiet)

    config, inc = with_incident("bot_wave", "country", "IN")
    inside = window_of(simulate_day(config, DAY).events, inc)
    scrapers = inside[inside["session_id"].fillna("").str.startswith("inc")]
    assert scrapers["session_id"].nunique() >= 100 and set(scrapers["country"]) == {"IN"}
    assert set(scrapers["event_type"]) == {"view"}

    config, inc = with_incident("card_testing", "country", "BR")
    sim = simulate_day(config, DAY)
    tests = window_of(sim.events, inc)
    tests = tests[tests["session_id"].fillna("").str.startswith("inc") & (tests["event_type"] == "purchase")]
    assert len(tests) >= 100 and (tests["price"] < 15).all()
    assert sim.orders["order_id"].isin(tests["order_id"]).sum() == len(tests)

    config, inc = with_incident("broken_checkout", "all", "all")
    inside = window_of(simulate_day(config, DAY).events, inc)
    assert (before["event_type"] == "purchase").sum() > 0
    assert (inside["event_type"] == "purchase").sum() == 0
    assert (inside["event_type"] == "checkout").sum() > (before["event_type"] == "checkout").sum()

    config, inc = with_incident("source_spike", "traffic_source", "email", intensity=2.0)
    inside = window_of(simulate_day(config, DAY).events, inc)
    count = lambda f: f[f["traffic_source"] == "email"]["session_id"].nunique()  # noqa: E731
    assert count(inside) > 1.5 * count(before)

    config, inc = with_incident("price_feed_error", "category", "electronics")
    inside = window_of(simulate_day(config, DAY).events, inc)
    top = inside["category_code"].str.split(".").str[0]
    same = before.set_index("event_id")["price"]
    hit = inside[top == "electronics"].set_index("event_id")["price"]
    assert len(hit) > 10
    np.testing.assert_allclose(hit, np.round(same.loc[hit.index] * 0.1, 2))


def test_truth_lists_every_incident_and_bad_incidents_are_refused():
    incidents = [Incident(kind, DAY, 60 * (k + 1), 45) for k, kind in enumerate(KINDS)]
    truth = incident_truth(incidents)
    assert list(truth["kind"]) == list(KINDS)
    assert (truth["end"] - truth["start"] == pd.Timedelta(minutes=45)).all()
    with pytest.raises(ValueError, match="unknown incident kind"):
        Incident("meteor", DAY, 0)
    with pytest.raises(ValueError, match="dimension"):
        Incident("bot_wave", DAY, 0, dimension="planet")


# -- aggregates -----------------------------------------------------------------------------------
def _event(eid, sid, seconds, etype="view", price=10.0, device="mobile", category="a.b"):
    return {"event_id": eid, "session_id": sid, "user_id": "u", "event_type": etype,
            "event_time": pd.Timestamp("2026-10-07 10:00", tz="UTC") + pd.Timedelta(seconds=seconds),
            "product_id": "p", "category_code": category, "price": price, "device": device,
            "country": "DE", "traffic_source": "organic"}


def test_minute_aggregates_count_sessions_fast_events_orders_and_prices():
    events = validate_events(pd.DataFrame([
        _event("a1", "A", 0), _event("a2", "A", 30, "cart"), _event("a3", "A", 31, "checkout"),
        _event("a4", "A", 50, "purchase"), _event("a5", "A", 51, "purchase"),  # one order
        _event("b1", "B", 59, device="tablet", price=100.0, category="x.y"),
        _event("b2", "B", 60.5, device="tablet"),  # next minute, fast
    ])).events
    counts = minute_aggregates(events)
    first, second = sorted(counts)
    assert second == first + 1
    m = counts[first]
    assert m[field("all", "all", "events")] == 6 and m[field("all", "all", "sessions")] == 2
    assert m[field("all", "all", "purchases")] == 2 and m[field("all", "all", "orders")] == 1
    assert m[field("device", "mobile", "fast")] == 2  # a3 and a5, each within 2 s
    assert m[field("device", "tablet", "sessions")] == 1
    assert m[field("category", "x", "priced")] == 1
    assert m[field("category", "x", "log_price")] == pytest.approx(np.log(100.0))
    assert counts[second] [field("device", "tablet", "fast")] == 1
    # sessions with an event in the minute: A and B, then B again
    assert m[field("all", "all", "active")] == 2 and m[field("device", "mobile", "active")] == 1
    assert counts[second][field("all", "all", "active")] == 1
    # counted in two halves (two batches) the counts add up to the same
    halves = merge(minute_aggregates(events.iloc[:3]), {})
    rest = events.iloc[3:]
    assert merge(halves, minute_aggregates(rest))[first][field("all", "all", "events")] == 6


def test_batch_clock_ignores_a_few_events_stamped_far_ahead():
    counts = {100: {field("all", "all", "events"): 500}, 101: {field("all", "all", "events"): 300},
              160: {field("all", "all", "events"): 1}}
    assert batch_clock(counts) == 101
    assert batch_clock({7: {field("all", "all", "events"): 1}}) == 7


# -- the detector -----------------------------------------------------------------------------------
@lru_cache(maxsize=2)
def counts_of(config: SimulatorConfig, judged_day: dt.date = DAY) -> dict:
    """Per-minute aggregates of the judged day and the day before (the baseline's first hours)."""
    counts: dict = {}
    for day in (judged_day - dt.timedelta(days=1), judged_day):
        events = simulate_day(config, day).events
        merge(counts, minute_aggregates(split_duplicates(validate_events(events).events).events))
    return counts


def judge(counts: dict, first: int, last: int, rules: LiveRules = LiveRules()) -> list[dict]:
    episodes, alerts = Episodes(), []
    for minute in range(first, last + 1):
        alerts.extend(episodes.alerts(judge_minute(counts, minute, rules), minute, rules))
    return alerts


def test_an_outage_is_found_within_minutes_and_a_quiet_noon_raises_nothing():
    config, inc = with_incident("tracking_outage", "device", "mobile")
    start = int(inc.start.timestamp() // 60)
    alerts = judge(counts_of(config), start, start + 9)
    assert ("device", "mobile") in {(a["dimension"], a["value"]) for a in alerts}
    assert all(a["check"].endswith("_drop") for a in alerts if a["value"] == "mobile")
    assert judge(counts_of(BASE), start, start + 9) == []


def test_a_country_outage_is_found_within_ten_minutes():
    # DE, 14 % of sessions, at the benchmark's scale: at noon a few DE sessions start a minute;
    # none seen at all for minutes is what gives the outage away
    config, inc = with_incident("tracking_outage", "country", "DE", sessions=20_000)
    start = int(inc.start.timestamp() // 60)
    alerts = judge(counts_of(config), start, start + 8)   # out by the end of minute start + 9
    assert ("active_drop", "country", "DE") in {(a["check"], a["dimension"], a["value"])
                                               for a in alerts}


def test_a_checkout_broken_where_orders_are_few_is_found_over_half_an_hour():
    # desktops late in the evening place a few orders in ten minutes (the anomaly benchmark's
    # day): none at all for ten is not improbable enough at the detector's p-value; for thirty
    # it is
    day = dt.date(2026, 9, 14)
    incident = Incident("broken_checkout", day, 20 * 60 + 17, 60, "device", "desktop")
    counts = counts_of(SimulatorConfig(seed=7, sessions_per_day=20_000, incidents=(incident,)), day)
    start = int(incident.start.timestamp() // 60)
    found = [a for a in judge(counts, start, start + 59) if a["value"] == "desktop"]
    assert [(a["check"], a["window"]) for a in found] == [("conversion_drop", 30)]
    assert found[0]["minute"] - start < 45 and found[0]["observed"] <= 0.1 * found[0]["expected"]
    assert not [a for a in judge(counts, start, start + 59, LiveRules(conversion_windows=()))
                if a["value"] == "desktop"]


def test_a_quiet_morning_ramp_raises_nothing():
    # 04:00-09:00: from the night's trough to the morning's rise (traffic 8x), small segments
    # with a few sessions a minute; the baseline reaches back to the same hours the day before
    first = int(pd.Timestamp(DAY, tz="UTC").timestamp() // 60) + 4 * 60
    assert judge(counts_of(BASE), first, first + 5 * 60) == []


def test_an_episode_alerts_once_until_it_has_been_quiet():
    finding = {"check": "paced_drop", "dimension": "device", "value": "mobile"}
    episodes, rules = Episodes(), LiveRules(quiet_minutes=5)
    assert episodes.alerts([finding], 10, rules) == [finding]
    assert episodes.alerts([finding], 11, rules) == []
    assert episodes.alerts([], 16, rules) == []
    assert episodes.alerts([finding], 17, rules) == [finding]


def test_evaluate_judges_each_minute_once_up_to_the_clock():
    config, inc = with_incident("tracking_outage", "device", "mobile")
    counts = counts_of(config)
    start = int(inc.start.timestamp() // 60)
    alerts, cursor = evaluate(counts, start + 11, {"judged": start - 1})
    assert cursor["judged"] == start + 10
    assert any(a["value"] == "mobile" for a in alerts)
    again, cursor = evaluate(counts, start + 11, cursor)
    assert again == [] and cursor["judged"] == start + 10
    # a first tick judges only the latest complete minute
    _, fresh = evaluate(counts, start + 11, None)
    assert fresh["judged"] == start + 10
    # the minutes the sensor reads (the last hours and the same hours the day before) suffice
    ranges = needed_minutes(start + 11, {"judged": start - 1})
    assert len(ranges) == 2 and ranges[0][1] < ranges[1][0] - 60
    read = {m: row for m, row in counts.items() if any(a <= m <= b for a, b in ranges)}
    assert evaluate(read, start + 11, {"judged": start - 1})[0] == alerts
