import datetime as dt

import numpy as np
import pandas as pd

from intent_assets.ingest.simulator import GAP_MEDIAN_S, SimulatorConfig, events_on, simulate_day
from intent_assets.ingest.simulator_world import (
    CART_RETURNS,
    CART_VALUE_THRESHOLD,
    CATEGORIES,
    COUNTRIES,
    COUNTRY_DEVICE_EFFECT,
    DEVICE_HOUR_EFFECT,
    DEVICES,
    INTERACTIONS,
    PRICE_LEVEL_REFERENCE,
    PRICE_SENSITIVITY,
    build_world,
)
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


# -- interactions: where conversion is not additive in what the model sees ---------------------

def _logit(p):
    return np.log(p / (1 - p))


def _humans(config, day=DAY):
    sim = simulate_day(config, day)
    return sim, sim.oracle_sessions[~sim.oracle_sessions["is_bot"]].set_index("session_id")


def _session_start(sim):
    """Device, country and UTC start hour of each simulated (non-bot) session, from its first
    event."""
    first = sim.oracle_events[sim.oracle_events["step"] == 0].drop_duplicates("session_id")
    where = sim.events.drop_duplicates("session_id").set_index("session_id")
    frame = first.set_index("session_id")
    return pd.DataFrame({"device": where["device"].reindex(frame.index),
                         "country": where["country"].reindex(frame.index),
                         "hour": frame["event_time"].dt.hour})


def test_device_hour_country_device_and_price_sensitivity_shift_the_prior_by_their_stated_terms():
    _, none = _humans(SimulatorConfig(seed=11, sessions_per_day=4000, interactions=()))
    sim, dh = _humans(SimulatorConfig(seed=11, sessions_per_day=4000, interactions=("device_hour",)))
    start = _session_start(sim).reindex(dh.index).dropna()
    shift = (_logit(dh["prior"]) - _logit(none["prior"])).reindex(start.index)
    expected = DEVICE_HOUR_EFFECT[start["device"].map({d: i for i, d in enumerate(DEVICES)}).to_numpy(),
                                  start["hour"].to_numpy(dtype=int)]
    np.testing.assert_allclose(shift.to_numpy(), expected, atol=1e-9)
    assert set(np.round(expected, 3)) >= {1.2, -1.2}
    # a wave per device: desktops peak at noon UTC, phones at 21
    assert DEVICE_HOUR_EFFECT[0].argmax() == 12 and DEVICE_HOUR_EFFECT[1].argmax() == 21

    sim, cd = _humans(SimulatorConfig(seed=11, sessions_per_day=4000, interactions=("country_device",)))
    start = _session_start(sim).reindex(cd.index).dropna()
    shift = (_logit(cd["prior"]) - _logit(none["prior"])).reindex(start.index)
    expected = COUNTRY_DEVICE_EFFECT[start["country"].map({c: i for i, c in enumerate(COUNTRIES)}).to_numpy(),
                                     start["device"].map({d: i for i, d in enumerate(DEVICES)}).to_numpy()]
    np.testing.assert_allclose(shift.to_numpy(), expected, atol=1e-9)
    assert set(np.round(expected, 3)) >= {0.7, -0.7, 0.0}

    _, ps = _humans(SimulatorConfig(seed=11, sessions_per_day=4000, interactions=("price_sensitivity",)))
    users = build_world(CONFIG).users.set_index("user_id")["coupon_affinity"]
    habit = ((users - users.mean()) / users.std(ddof=0)).reindex(ps["user_id"]).to_numpy()
    per_habit = (_logit(ps["prior"]) - _logit(none["prior"])).to_numpy() / habit
    # the shift per unit of coupon habit is one of the categories' -k * log(price level)
    levels = -PRICE_SENSITIVITY * np.log(np.array([c[1] for c in CATEGORIES]) / PRICE_LEVEL_REFERENCE)
    assert np.abs(per_habit[:, None] - levels[None, :]).min(axis=1).max() < 1e-6
    assert len(np.unique(np.round(per_habit, 6))) == len(CATEGORIES)


def _after_trigger(sim, humans, trigger: str) -> pd.Series:
    """Per non-converting session that reached the trigger, how many events it had after it."""
    ev = sim.events.drop_duplicates("event_id").dropna(subset=["event_time", "session_id"])
    ev = ev[ev["session_id"].isin(humans.index[humans["outcome"] == 0])]
    ev = ev.sort_values(["session_id", "event_time", "event_id"])
    price = ev["price"].fillna(0.0)
    if trigger == "value_threshold":
        delta = np.where(ev["event_type"] == "cart", price,
                         np.where(ev["event_type"] == "remove_from_cart", -price, 0.0))
        reached = pd.Series(delta, index=ev.index).groupby(ev["session_id"]).cumsum() >= CART_VALUE_THRESHOLD
    else:
        pages = (ev["page_type"] == "cart").astype(int)
        reached = pages.groupby(ev["session_id"]).cumsum() >= CART_RETURNS
    after = reached.groupby(ev["session_id"]).cumsum()
    return (after[after > 0] - 1).groupby(ev.loc[after.index[after > 0], "session_id"]).max()


def test_a_full_cart_and_a_return_to_it_send_non_buyers_away():
    for trigger in ("value_threshold", "cart_return"):
        sims = [_humans(SimulatorConfig(seed=11, sessions_per_day=4000, interactions=on), day)
                for on in ((), (trigger,)) for day in (DAY, DAY + dt.timedelta(days=1))]
        without = pd.concat([_after_trigger(s, h, trigger) for s, h in sims[:2]])
        with_it = pd.concat([_after_trigger(s, h, trigger) for s, h in sims[2:]])
        assert len(without) > 100 and len(with_it) > 100
        # without the interaction, browsing goes on; with it, non-buyers leave soon after
        assert with_it.mean() < 0.75 * without.mean(), trigger


def test_the_oracle_is_the_probability_that_generated_the_label_in_every_interaction_cell():
    """The prior is the outcome's probability and p_true after any event is the posterior: both
    calibrated within cells the interactions define (one draw per session, so samples are
    independent)."""
    full = SimulatorConfig(seed=11, sessions_per_day=4000)
    assert full.interactions == INTERACTIONS
    frames = []
    for day in (DAY, DAY + dt.timedelta(days=1)):
        sim, humans = _humans(full, day)
        start = _session_start(sim).reindex(humans.index)
        frames.append(humans.assign(device=start["device"], country=start["country"],
                                    evening=start["hour"] >= 18))
    s = pd.concat(frames)
    y = (s["outcome"] > 0).astype(float)
    for cells in (["device", "evening"], ["country", "device"]):
        for _, cell in s.groupby(cells):
            yc = y.loc[cell.index]
            se = np.sqrt((cell["prior"] * (1 - cell["prior"])).sum()) / len(cell)
            assert abs(yc.mean() - cell["prior"].mean()) < 4 * se + 1e-3

    # per event: among each session's events once its cart passed the value threshold, the one
    # after the crossing: mean p_true is the rate
    picks = []
    for day in (DAY, DAY + dt.timedelta(days=1)):
        sim, humans = _humans(full, day)
        o = sim.oracle_events.merge(sim.events.drop_duplicates("event_id")[["event_id", "price"]],
                                    on="event_id").sort_values(["session_id", "step"])
        o = o[o["session_id"].isin(humans.index) & (o["event_type"] != "purchase")]
        price = o["price"].fillna(0.0)
        delta = np.where(o["event_type"] == "cart", price,
                         np.where(o["event_type"] == "remove_from_cart", -price, 0.0))
        over = pd.Series(delta, index=o.index).groupby(o["session_id"]).cumsum() >= CART_VALUE_THRESHOLD
        after = o[over].groupby("session_id").nth(1).set_index("session_id")
        picks.append(pd.DataFrame({"p": after["p_true"],
                                   "y": (humans.loc[after.index, "outcome"] > 0).astype(float),
                                   "start": o.groupby("session_id")["p_true"].first()
                                   .reindex(after.index)}))
    pick = pd.concat(picks)
    se = np.sqrt((pick["p"] * (1 - pick["p"])).sum()) / len(pick)
    assert len(pick) > 200 and abs(pick["y"].mean() - pick["p"].mean()) < 4 * se + 1e-3
    # and the jump is there: these sessions looked far less certain at their first event
    assert pick["p"].mean() > 1.5 * pick["start"].mean()


def _pace_at_fourth_event(config, days=(DAY, DAY + dt.timedelta(days=1))) -> pd.DataFrame:
    """Per session with a fourth event: p_true there, the label, and the pace its three gaps
    show (mean log of gap / the action's median gap): only what was seen by that event."""
    frames = []
    for day in days:
        sim, humans = _humans(config, day)
        o = sim.oracle_events[sim.oracle_events["session_id"].isin(humans.index)
                              & (sim.oracle_events["step"] <= 3)
                              & (sim.oracle_events["event_type"] != "purchase")]
        o = o.sort_values(["session_id", "step"])
        gap = o.groupby("session_id")["event_time"].diff().dt.total_seconds()
        shift = np.log(gap / o["event_type"].map(GAP_MEDIAN_S))
        fourth = o[o["step"] == 3].set_index("session_id")
        frames.append(pd.DataFrame({
            "p": fourth["p_true"], "y": (humans.loc[fourth.index, "outcome"] > 0).astype(float),
            "pace": shift.groupby(o["session_id"]).mean().reindex(fourth.index)}))
    return pd.concat(frames)


def test_pace_says_most_in_the_middle_and_the_oracle_follows_it():
    """Buyers move at a steady pace, non-buyers as often skim or idle: the rate is highest for
    sessions of middling pace (what an additive model on events per minute cannot express), and
    p_true is calibrated in every pace quintile."""
    seen = _pace_at_fourth_event(CONFIG)
    seen["quintile"] = pd.qcut(seen["pace"], 5, labels=False)
    cells = seen.groupby("quintile").agg(p=("p", "mean"), y=("y", "mean"), n=("p", "size"),
                                         var=("p", lambda p: (p * (1 - p)).sum()))
    se = np.sqrt(cells["var"]) / cells["n"]
    assert cells["n"].min() > 300
    assert ((cells["y"] - cells["p"]).abs() < 4 * se + 1e-3).all(), cells
    middle, ends = cells["y"].iloc[2], cells["y"].iloc[[0, 4]]
    assert (middle > 2.5 * ends).all(), cells

    # switched off, every session is steady: the gaps say nothing about the outcome
    off = _pace_at_fourth_event(SimulatorConfig(seed=11, sessions_per_day=4000,
                                                interactions=tuple(i for i in INTERACTIONS if i != "pace")))
    off["quintile"] = pd.qcut(off["pace"], 5, labels=False)
    rates = off.groupby("quintile")["y"].mean()
    assert rates.max() < 1.6 * rates.min(), rates
