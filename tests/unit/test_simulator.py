import datetime as dt

import numpy as np
import pandas as pd

from intent_assets.ingest.simulator import SimulatorConfig, events_on, simulate_day
from streaming_jobs.contract import COLUMNS, EVENT_TYPES, split_duplicates, validate_events

CONFIG = SimulatorConfig(seed=11, sessions_per_day=4000)
DAY = dt.date(2026, 10, 7)


def test_same_seed_same_day_gives_identical_output_and_other_seeds_differ():
    a = simulate_day(CONFIG, DAY)
    simulate_day.cache_clear()
    b = simulate_day(CONFIG, DAY)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.oracle_events, b.oracle_events)
    other = simulate_day(SimulatorConfig(seed=12, sessions_per_day=4000), DAY)
    assert not a.events["event_id"].equals(other.events["event_id"]) or \
        not a.events["event_time"].equals(other.events["event_time"])


def test_base_rate_is_realistic_and_every_converter_buys():
    rates = []
    for day in (DAY, DAY + dt.timedelta(days=1)):
        sim = simulate_day(CONFIG, day)
        humans = sim.oracle_sessions[~sim.oracle_sessions["is_bot"]]
        converted = humans[humans["outcome"] > 0]
        rates.append(len(converted) / len(humans))
        # Each converting session (in-session or by a comeback) produces exactly one order.
        buyer_users = set(sim.orders["user_id"])
        assert set(converted["user_id"]) <= buyer_users
        assert len(sim.orders) == len(converted)
    assert 0.02 <= np.mean(rates) <= 0.06


def test_events_follow_the_contract_with_a_few_deliberate_defects():
    sim = simulate_day(CONFIG, DAY)
    assert list(sim.events.columns) == list(COLUMNS)
    checked = validate_events(sim.events)
    deduped = split_duplicates(checked.events)
    assert set(deduped.events["event_type"]) <= set(EVENT_TYPES)
    assert deduped.events["event_id"].is_unique
    # garbled copies and re-deliveries exist, and all of them are caught
    assert 0 < len(checked.quarantine) < 0.01 * len(sim.events)
    assert 0 < len(deduped.quarantine) < 0.01 * len(sim.events)
    assert checked.quarantine["event_id"].str.endswith("-x").all()
    # purchases carry order, revenue and discount
    buys = deduped.events[deduped.events["event_type"] == "purchase"]
    assert buys["order_id"].notna().all() and (buys["revenue"] > 0).all()
    assert buys["discount"].between(0, 0.3).all()
    # some events arrive late, and the file is in arrival order
    late = (deduped.events["received_time"] - deduped.events["event_time"]).dt.total_seconds() > 60
    assert late.any()
    assert sim.events["received_time"].is_monotonic_increasing


def test_world_has_markets_devices_sources_bots_and_seasonality():
    ev = simulate_day(CONFIG, DAY).events
    assert ev["country"].nunique() >= 5 and ev["device"].nunique() == 3
    assert ev["traffic_source"].nunique() >= 5
    assert ev["user_id"].str.startswith("anon-bot").any()
    hours = ev.drop_duplicates("session_id")["event_time"].dt.hour.value_counts()
    assert hours.get(20, 0) > 3 * hours.get(3, 0)


def test_oracle_is_a_probability_that_ranks_buyers_higher():
    sim = simulate_day(CONFIG, DAY)
    o = sim.oracle_events.merge(sim.oracle_sessions[["session_id", "outcome"]], on="session_id")
    assert o["p_true"].between(0, 1).all()
    last = o.sort_values("step").groupby("session_id").last()
    assert last.loc[last["outcome"] > 0, "p_true"].mean() > 5 * last.loc[last["outcome"] == 0, "p_true"].mean()
    # calibrated by construction: mean predicted ~ observed among pre-purchase events
    pre = o[o["event_type"] != "purchase"]
    first = pre.sort_values("step").groupby("session_id").first()
    assert abs(first["p_true"].mean() - (first["outcome"] > 0).mean()) < 0.01


def test_events_on_a_day_include_sessions_spilling_past_midnight():
    ev = events_on(CONFIG, DAY)
    valid = ev[ev["event_time"].notna()]
    assert (valid["event_time"].dt.date == DAY).all()
    yesterday = (DAY - dt.timedelta(days=1)).strftime("%Y%m%d")
    assert valid["session_id"].str.startswith(yesterday).any()
